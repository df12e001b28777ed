"""The run report of the pruning pipeline: report.json, report.md (a row per step) and trend.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

COLUMNS = (
    ("step", "step", "{}"),
    ("criterion", "criterion", "{}"),
    ("params", "params", "{:,}"),
    ("gflops", "GFLOPs", "{:.3f}"),
    ("latency_ms", "CPU latency (ms)", "{:.1f}"),
    ("map50", "mAP50", "{:.3f}"),
    ("map50_95", "mAP50-95", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
)


def markdown_table(rows: Sequence[dict[str, Any]], columns=COLUMNS) -> str:
    """A GitHub markdown table of `rows` in the order and format of `columns` (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(row.get(k), f) for k, _, f in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def write_report(run_dir: Path, rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Write report.json, report.md and trend.png for the steps so far (step 0 is the unpruned model)."""
    run_dir = Path(run_dir)
    (run_dir / "report.json").write_text(json.dumps({"settings": settings, "steps": list(rows)}, indent=2, default=str))
    base = rows[0] if rows else {}
    lines = [f"# Pruning report: {settings.get('criterion')} on {settings.get('pretrained') or settings.get('model')}",
             "", markdown_table(rows), ""]
    if rows and base.get("params"):
        last = rows[-1]
        lines.append(
            f"Removed {1 - last['params'] / base['params']:.1%} of parameters and "
            f"{1 - last['gflops'] / base['gflops']:.1%} of GFLOPs; mAP50-95 {base.get('map50_95', 0):.3f} -> "
            f"{last.get('map50_95', 0):.3f}."
        )
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    plot_trend(rows, run_dir / "trend.png")


def plot_trend(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """mAP50 and mAP50-95 against the fraction of parameters and of GFLOPs removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    if rows:
        for ax, key, label in ((axes[0], "params", "parameters removed"), (axes[1], "gflops", "GFLOPs removed")):
            base = rows[0][key]
            removed = [1 - r[key] / base for r in rows]
            for metric, style in (("map50", "o-"), ("map50_95", "s--")):
                ax.plot(removed, [r.get(metric, float("nan")) for r in rows], style, label=metric)
            ax.set_xlabel(f"fraction of {label}")
            ax.set_ylabel("mAP")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
