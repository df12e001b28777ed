"""The run report of the pruning pipeline: report.json, report.md (a row per step) and trend.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from fxgraph.outputs import write_text

from ..errors import OutputError
from .blind import report_warnings
from .metrics import PRIMARY, primary, primary_metric

def speedup_cell(row: Mapping[str, Any]) -> str:
    """The measured speed-up over the unpruned model, 'min (median)': both ratios from one interleaved call."""
    if row.get("speedup") is None:
        return "-"
    median = row.get("speedup_median")
    return f"{row['speedup']:.2f}×" + (f" ({median:.2f}×)" if median is not None else "")


COLUMNS = (
    ("step", "step", "{}"),
    ("criterion", "criterion", "{}"),
    ("params", "params", "{:,}"),
    ("gflops", "GFLOPs", "{:.3f}"),
    ("latency_ms", "latency min (ms)", "{:.1f}"),
    ("latency_median_ms", "median (ms)", "{:.1f}"),
    ("speedup", "speed-up min (median)", speedup_cell),
    ("map50", "mAP50", "{:.3f}"),
    ("map50_95", "mAP50-95", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("map50_95_pose", "pose mAP50-95", "{:.3f}"),
    ("top1", "top-1", "{:.3f}"),
    ("top5", "top-5", "{:.3f}"),
)


METRIC_KEYS = frozenset({"map50", "map50_95", "recall", "f1", "map50_95_pose", "top1", "top5"})  # per task


def markdown_table(rows: Sequence[dict[str, Any]], columns=COLUMNS) -> str:
    """A GitHub markdown table of `rows` in the order and format of `columns` (key, header, format: a format
    string for row[key], or a function of the whole row)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(f(row) if callable(f) else _fmt(row.get(k), f) for k, _, f in columns) + " |"
            for row in rows]
    return "\n".join([head, rule, *body])


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def columns_at(imgsz: int | None, latency_imgsz: int | None = None) -> tuple[tuple[str, str, str], ...]:
    """COLUMNS with the image sizes at which GFLOPs and latency were taken written into their headers."""
    size = {}
    if imgsz is not None:
        size["gflops"] = f"GFLOPs@{imgsz}"
    if latency_imgsz is not None:
        size["latency_ms"] = f"latency@{latency_imgsz} min (ms)"
    return tuple((k, size.get(k, h), f) for k, h, f in COLUMNS)


METRIC_WORDS = {"params": "parameters", "gflops": "GFLOPs", "latency": "latency"}


def removed_fraction(row: Mapping[str, Any], base: Mapping[str, Any], metric: str) -> float:
    """The fraction of `metric` that `row` removed against `base` (the unpruned row).  Latency: 1 - 1/speed-up,
    the speed-up being timed interleaved with the unpruned model (rows without one: the ratio of minima)."""
    if metric == "latency":
        speedup = row.get("speedup") or base["latency_ms"] / row["latency_ms"]
        return 1 - 1 / speedup
    return 1 - row[metric] / base[metric]


def latency_note(settings: Mapping[str, Any]) -> str:
    """The conditions of the latency columns, in words (from the `latency_*` settings)."""
    runtime = settings.get("latency_runtime", "onnxruntime")
    where = (f"on the CPU with {settings.get('latency_threads')} thread(s)" if runtime == "onnxruntime"
             else f"on device {settings.get('device')} (CUDA synchronised)")
    return (f"Latency: {runtime} {where}, batch 1 at {settings.get('latency_imgsz')}x{settings.get('latency_imgsz')}, "
            f"{settings.get('latency_warmup')} warm-up run(s), then {settings.get('latency_repeats')} timed runs "
            f"interleaved with the unpruned model's; minimum and median in ms.  The speed-up is the unpruned model's "
            f"minimum over this row's (in brackets: the same of the medians), both from the same interleaved call.")


def summary_line(rows: Sequence[Mapping[str, Any]]) -> str:
    """What the run bought, in one sentence (report.md's and the console's last line): params, GFLOPs and the task's
    metric (metrics.primary) of the last row against the first (the unpruned model), and its measured speed-up,
    min (median)."""
    base, last = rows[0], rows[-1]
    median = last.get("speedup_median")
    metric = primary_metric(base.get("task"))
    quality = (f"; {metric.label} {primary(base):.3f} -> {primary(last):.3f}"
               if metric.key in base and metric.key in last else "")  # rows not validated (yet) carry none
    return (f"Removed {1 - last['params'] / base['params']:.1%} of parameters and "
            f"{1 - last['gflops'] / base['gflops']:.1%} of GFLOPs{quality}"
            + (f"; {last['speedup']:.2f}× faster than the unpruned model ({last['latency_ms']:.1f} ms against "
               f"{last['latency_ms'] * last['speedup']:.1f} ms, minima" + (f"; {median:.2f}× by the medians"
                                                                             if median is not None else "")
               + ")." if last.get("speedup") else "."))


def run_summary(run_dir: Path) -> str:
    """The summary line of a finished run, from its report.json (what the CLI prints last)."""
    rows = json.loads((Path(run_dir) / "report.json").read_text())["steps"]
    return summary_line(rows) if rows and rows[0].get("params") else "no rows measured"


def write_report(run_dir: Path, rows: Sequence[dict[str, Any]], settings: Mapping[str, Any]) -> None:
    """Write report.json, report.md and trend.png for the steps so far (step 0 is the unpruned model)."""
    run_dir = Path(run_dir)
    write_text(run_dir / "report.json", json.dumps({"settings": dict(settings), "steps": list(rows)}, indent=2,
                                                   default=str), error=OutputError)
    base = rows[0] if rows else {}
    imgsz = settings.get("imgsz")
    columns = [c for c in columns_at(imgsz, settings.get("latency_imgsz"))  # the task's metrics only
               if c[0] not in METRIC_KEYS or any(c[0] in r for r in rows)]
    lines = [f"# Pruning report: {settings.get('criterion')} on {settings.get('pretrained') or settings.get('model')}",
             "", markdown_table(rows, columns), ""]
    if rows and base.get("params"):
        lines.append(summary_line(rows))
    for warning in report_warnings(rows):  # steps whose model detects nothing on its calibration images
        lines += ["", warning]
    if settings.get("latency_imgsz") is not None:
        lines += ["", latency_note(settings)]
    if imgsz is not None:
        lines += ["", f"GFLOPs are taken at {imgsz}x{imgsz}, the image size of training and of the ONNX export; "
                      f"ultralytics's own model summary prints GFLOPs at 640x640, so its figure differs."]
    write_text(run_dir / "report.md", "\n".join(lines) + "\n", error=OutputError)
    plot_trend(rows, run_dir / "trend.png", title=f"{settings.get('criterion')} pruning of "
                                                  f"{Path(str(settings.get('pretrained') or settings.get('model'))).name}")


METRIC_NAMES = {**{m.key: m.label for m in PRIMARY.values()}, "map50": "mAP50 (box)", "map50_95": "mAP50-95 (box)"}


def plot_trend(rows: Sequence[dict[str, Any]], path: Path, title: str = "pruning") -> None:
    """mAP50 and mAP50-95 against the fraction of parameters and of GFLOPs removed, each point labelled by its step
    (the final point, after the last fine-tuning, sits above the last step's fraction: it is labelled so)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    fig.suptitle(f"{title}: accuracy against what was removed", fontsize=10)
    if rows:
        for ax, key, label in ((axes[0], "params", "parameters removed"), (axes[1], "gflops", "GFLOPs removed")):
            base = rows[0][key]
            removed = [1 - r[key] / base for r in rows]
            best = primary_metric(rows[0].get("task")).key  # the task's quality metric, with box mAP50 when boxed
            for metric, style in ((("map50", "o-"),) if "map50" in rows[0] else ()) + ((best, "s--"),):
                values = [r.get(metric, float("nan")) for r in rows]
                ax.plot(removed, values, style, label=METRIC_NAMES[metric])
                for x, y, r in zip(removed, values, rows):
                    final = r.get("step") == "final"
                    text = "final (fine-tuned)" if final else f"step {r.get('step')}"
                    if metric == best:  # the final point shares the last step's x: label it above, not below
                        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 6 if final else -10),
                                    fontsize=7)
            ax.set_xlabel(f"fraction of {label}")
            ax.set_ylabel("quality on the val split")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
