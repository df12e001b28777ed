"""One self-contained HTML page to browse the explanations of an image (`index.html` of `relprop explain`).

The image with every explained box; clicking a box shows its heatmap figure, score, reference score, delta and its
most relevant filters by layer.  Everything is inlined (images as data URIs, data as JSON, no external script or
font), so the file opens from disk, offline, and in a notebook (`relprop.browse(...)`, an iframe).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import RelpropError

if TYPE_CHECKING:
    from .explanation import Explanation

TOP_FILTERS = 5  # filters listed per layer


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image_uri(explanation: "Explanation") -> tuple[str, int, int]:
    """The explained image as a JPEG data URI and its width, height (a grey field of the heatmap's size if the
    explanation kept no image)."""
    import cv2

    image = explanation.image
    if image is None:
        h, w = explanation.heatmap.shape
        image = np.full((h, w, 3), 128, np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RelpropError("relprop page: the image could not be encoded as JPEG")
    return _data_uri(buf.tobytes(), "image/jpeg"), image.shape[1], image.shape[0]


def top_filters(channels: dict[str, np.ndarray], k: int = TOP_FILTERS) -> list[dict]:
    """Per conv layer its `k` most relevant filters (highest relevance first); layers ordered by their best filter."""
    layers = []
    for path, rel in channels.items():
        rel = np.asarray(rel, dtype=np.float64).reshape(-1)
        if rel.size == 0:
            continue
        order = np.argsort(-rel, kind="stable")[:k]
        layers.append({"layer": path, "filters": int(rel.size), "sum": float(rel.sum()),
                       "top": [[int(i), float(rel[i])] for i in order]})
    layers.sort(key=lambda r: -r["top"][0][1])
    return layers


def _record(e: "Explanation", png: bytes) -> dict:
    return {"index": e.index, "name": e.name, "cls": e.cls, "conf": float(e.conf), "target": e.target,
            "baseline": e.baseline, "box": [float(v) for v in e.box], "score": float(e.score),
            "reference_score": float(e.reference_score), "delta": float(e.delta),
            "heatmap": _data_uri(png, "image/png"), "layers": top_filters(e.channels)}


def render_page(explanations: Sequence["Explanation"], heatmaps: Sequence[bytes] | None = None,
                title: str = "relprop explanations") -> str:
    """The page as one HTML string.  `heatmaps`: each explanation's PNG figure (drawn with `save_png` if None)."""
    from .display import png_bytes

    explanations = list(explanations)
    if not explanations:
        raise RelpropError("relprop page: no explanations to show (the list is empty); explain a box first")
    if heatmaps is None:
        heatmaps = [png_bytes(e) for e in explanations]
    if len(heatmaps) != len(explanations):
        raise RelpropError(f"relprop page: {len(heatmaps)} heatmaps for {len(explanations)} explanations")
    image, width, height = _image_uri(explanations[0])
    data = json.dumps([_record(e, png) for e, png in zip(explanations, heatmaps)]).replace("</", "<\\/")
    stroke = max(2.0, max(width, height) / 300)
    boxes = "\n".join(
        f'<g class="box" data-box="{i}" tabindex="0" role="button" aria-label="{html.escape(e.name)} #{e.index}">'
        f'<rect x="{e.box[0]:.1f}" y="{e.box[1]:.1f}" width="{e.box[2] - e.box[0]:.1f}" '
        f'height="{e.box[3] - e.box[1]:.1f}" stroke-width="{stroke:.1f}"/>'
        f'<text x="{e.box[0] + stroke:.1f}" y="{e.box[1] + 8 * stroke:.1f}" font-size="{7 * stroke:.1f}">'
        f'#{e.index} {html.escape(e.name)} {e.conf:.2f}</text></g>'
        for i, e in enumerate(explanations))
    return _TEMPLATE.format(title=html.escape(title), image=image, width=width, height=height, boxes=boxes,
                            data=data, count=len(explanations))


def write_page(path: str | Path, explanations: Sequence["Explanation"], heatmaps: Sequence[bytes] | None = None,
               title: str = "relprop explanations") -> Path:
    """Write `render_page(...)` to `path` (the caller makes the write atomic, as `relprop explain` does)."""
    path = Path(path)
    path.write_text(render_page(explanations, heatmaps, title), encoding="utf-8")
    return path


class ExplanationPage:
    """The browsing page of some explanations; a notebook shows it inline (an iframe holding the page)."""

    def __init__(self, explanations: Sequence["Explanation"], title: str = "relprop explanations",
                 height: int = 720) -> None:
        self.html = render_page(explanations, title=title)
        self.height = height

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:{self.height}px;'
                f'border:1px solid #ccc"></iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page to `path` (opens in any browser, offline)."""
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path


def browse(explanations: "Explanation | Sequence[Explanation]", title: str = "relprop explanations"
           ) -> ExplanationPage:
    """The page `relprop explain` writes as index.html, for a notebook: `relprop.browse(relprop.explain(m, img))`."""
    from .explanation import Explanation

    if isinstance(explanations, Explanation):
        explanations = [explanations]
    return ExplanationPage(explanations, title=title)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }}
header {{ padding: 8px 16px; background: #263238; color: #fff; font-size: 15px; }}
main {{ display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; }}
#overview, #detail {{ flex: 1 1 420px; min-width: 320px; }}
#stage {{ position: relative; }}
#stage img, #stage svg {{ width: 100%; display: block; }}
#stage svg {{ position: absolute; top: 0; left: 0; height: 100%; }}
.box rect {{ fill: rgba(0, 255, 0, 0.06); stroke: #00e000; cursor: pointer; }}
.box text {{ fill: #00e000; paint-order: stroke; stroke: #000; stroke-width: 2px; pointer-events: none; }}
.box.selected rect {{ stroke: #ff1744; fill: rgba(255, 23, 68, 0.10); }}
.box.selected text {{ fill: #ff1744; }}
#heatmap {{ width: 100%; border: 1px solid #ddd; background: #fff; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 8px; width: 100%; }}
td, th {{ border-bottom: 1px solid #e0e0e0; padding: 3px 6px; text-align: left; vertical-align: top; }}
#layers-wrap {{ max-height: 340px; overflow: auto; }}
.num {{ font-variant-numeric: tabular-nums; }}
p.hint {{ font-size: 13px; color: #555; }}
</style></head>
<body>
<header>{title} &middot; {count} box(es) &middot; click a box to see its relevance</header>
<main>
<section id="overview">
<div id="stage"><img id="image" src="{image}" alt="explained image">
<svg viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">{boxes}</svg></div>
<p class="hint">Red: evidence for the box, blue: against it. Relevance adds up: its sum is score &minus; reference
score, up to delta.</p>
</section>
<section id="detail">
<h2 id="detail-title"></h2>
<img id="heatmap" alt="heatmap of the selected box" data-box="">
<table id="numbers"><tbody>
<tr><th>score f(x)</th><td id="score" class="num"></td></tr>
<tr><th>reference score f(x&#8320;)</th><td id="reference" class="num"></td></tr>
<tr><th>delta &Sigma;R &minus; (f(x) &minus; f(x&#8320;))</th><td id="delta" class="num"></td></tr>
<tr><th>confidence</th><td id="conf" class="num"></td></tr>
<tr><th>box (x1, y1, x2, y2)</th><td id="box-coords" class="num"></td></tr>
<tr><th>target, reference</th><td id="target"></td></tr>
</tbody></table>
<h3>Most relevant filters by layer</h3>
<div id="layers-wrap"><table id="layers"><thead><tr><th>layer</th><th>filters</th>
<th>top filters (index: relevance)</th></tr></thead><tbody></tbody></table></div>
</section>
</main>
<script type="application/json" id="explanations">{data}</script>
<script>
(function () {{
  var data = JSON.parse(document.getElementById("explanations").textContent);
  function fmt(v, d) {{ return Math.abs(v) > 0 && Math.abs(v) < 1e-3 ? v.toExponential(2) : v.toFixed(d); }}
  function select(i) {{
    var e = data[i];
    document.querySelectorAll(".box").forEach(function (g) {{
      g.classList.toggle("selected", g.getAttribute("data-box") === String(i));
    }});
    var img = document.getElementById("heatmap");
    img.src = e.heatmap;
    img.setAttribute("data-box", String(i));
    document.getElementById("detail-title").textContent = "#" + e.index + " " + e.name;
    document.getElementById("score").textContent = fmt(e.score, 5);
    document.getElementById("reference").textContent = fmt(e.reference_score, 5);
    document.getElementById("delta").textContent = e.delta.toExponential(2);
    document.getElementById("conf").textContent = e.conf.toFixed(3);
    document.getElementById("box-coords").textContent = e.box.map(function (v) {{ return v.toFixed(1); }}).join(", ");
    document.getElementById("target").textContent = e.target + ", " + e.baseline;
    var body = document.querySelector("#layers tbody");
    body.innerHTML = "";
    e.layers.forEach(function (l) {{
      var tr = document.createElement("tr");
      [l.layer, String(l.filters), l.top.map(function (t) {{ return t[0] + ": " + fmt(t[1], 4); }}).join(", ")]
        .forEach(function (text) {{
          var td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
        }});
      body.appendChild(tr);
    }});
  }}
  document.querySelectorAll(".box").forEach(function (g) {{
    var i = Number(g.getAttribute("data-box"));
    g.addEventListener("click", function () {{ select(i); }});
    g.addEventListener("keydown", function (ev) {{ if (ev.key === "Enter" || ev.key === " ") select(i); }});
  }});
  var m = /box=(\\d+)/.exec(location.hash);
  select(m && Number(m[1]) < data.length ? Number(m[1]) : 0);
}})();
</script>
</body></html>
"""
