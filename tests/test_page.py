"""`relprop explain` writes index.html: one self-contained page; clicking a box shows that box's heatmap."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess

import pytest

import relprop
from relprop import cli
from relprop.page import render_page, top_filters

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One explain run of a random yolov8n at 64 px, three boxes (module-scoped: traced once)."""
    out = tmp_path_factory.mktemp("page") / "run"
    assert cli.main(["explain", "yolov8n.yaml", "--imgsz", "64", "--conf", "0", "--max-det", "3", "--out",
                     str(out)]) == 0
    return out


def page_data(text: str) -> list[dict]:
    blob = re.search(r'<script type="application/json" id="explanations">(.*?)</script>', text, re.S).group(1)
    return json.loads(blob)


def test_explain_writes_a_self_contained_page(run):
    text = (run / "index.html").read_text()
    records = json.loads((run / "explanations.json").read_text())["explanations"]
    data = page_data(text)
    assert len(records) == 3 and len(data) == 3
    assert len(re.findall(r'<g class="box" data-box="\d+"', text)) == 3
    for r, d in zip(records, data):
        png = (run / r["png"]).read_bytes()
        assert d["heatmap"] == "data:image/png;base64," + base64.b64encode(png).decode()  # the PNG beside it
        assert (d["score"], d["reference_score"], d["delta"]) == (r["score"], r["reference_score"], r["delta"])
        assert d["layers"] and all(len(layer["top"]) <= 5 for layer in d["layers"])
    # no server, no network: nothing is fetched from anywhere
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', text)
    assert "http://" not in text and "https://" not in text and "@import" not in text


def test_top_filters_are_highest_first_and_layers_by_their_best_filter():
    import numpy as np
    layers = top_filters({"a": np.array([0.1, 3.0, -1.0, 2.0]), "b": np.array([5.0, 0.0]), "c": np.array([])}, k=2)
    assert [l["layer"] for l in layers] == ["b", "a"]
    assert layers[1]["top"] == [[1, 3.0], [3, 2.0]] and layers[1]["filters"] == 4


def test_page_escapes_names_and_refuses_nothing_to_show():
    from tests.test_display import explanation
    ex = explanation()
    ex.name = "</script><b>x"
    text = render_page([ex])
    assert "</script><b>x" not in text and page_data(text)[0]["name"] == "</script><b>x"
    with pytest.raises(relprop.RelpropError, match="no explanations to show"):
        render_page([])
    page = relprop.browse(ex)
    assert page._repr_html_().startswith("<iframe srcdoc=") and html.unescape(
        page._repr_html_().split('srcdoc="', 1)[1].split('" style=', 1)[0]) == page.html


def dump_dom(path) -> str:
    result = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--allow-file-access-from-files", "--dump-dom", path.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (apt-get install -y chromium)")
@pytest.mark.parametrize("box", [1, 2])
def test_clicking_a_box_in_chromium_shows_its_heatmap(run, tmp_path, box):
    """Headless Chromium loads the page, a script clicks box `box` the way a user does (a click event on its
    outline), and the DOM it dumps shows that box's heatmap, title and numbers."""
    text = (run / "index.html").read_text()
    click = ("<script>document.querySelector('.box[data-box=\"%d\"] rect')"
             ".dispatchEvent(new MouseEvent('click', {bubbles: true}));</script></body>" % box)
    page = tmp_path / "clicked.html"
    page.write_text(text.replace("</body>", click))
    dom = dump_dom(page)
    data = page_data(text)
    shown = re.search(r'<img id="heatmap"[^>]*>', dom).group(0)
    assert f'data-box="{box}"' in shown
    assert f'src="{data[box]["heatmap"]}"' in shown  # exactly that box's PNG
    assert re.search(rf'<h2 id="detail-title">#{data[box]["index"]} ', dom)
    assert re.search(rf'<g class="box selected" data-box="{box}"', dom)
    assert len(re.findall(r'class="box selected"', dom)) == 1
    assert dom.count("<tr>") > 6  # the layers table was filled in
    for cell, key in (("score", "score"), ("reference", "reference_score"), ("delta", "delta")):
        shown_value = float(re.search(rf'<td id="{cell}" class="num">([^<]*)</td>', dom).group(1))
        assert shown_value == pytest.approx(data[box][key], rel=1e-2, abs=1e-5), cell
    best = data[box]["layers"][0]
    assert re.search(rf"<td>{re.escape(best['layer'])}</td><td>{best['filters']}</td><td>{best['top'][0][0]}: ", dom)
    # without the click, the first box is shown
    plain = dump_dom(run / "index.html")
    assert 'data-box="0"' in re.search(r'<img id="heatmap"[^>]*>', plain).group(0)
