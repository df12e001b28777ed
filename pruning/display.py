"""Notebook rendering of pruning results: a plan's `Report` and a `Pruned` model as small HTML tables.

Plain HTML strings (no dependency); `Report._repr_html_` and `Pruned._repr_html_` call these.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .api import Pruned, Report

_STYLE = "border-collapse:collapse;font-variant-numeric:tabular-nums"


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f'<{tag} style="padding:2px 8px;text-align:right">{c}</{tag}>' for c in cells) + "</tr>"


def report_html(report: "Report", caption: str = "pruning report") -> str:
    """Parameters and GFLOPs before and after, the fraction kept, and the channel units removed."""
    h, w = report.imgsz
    rows = [
        _row(["", "before", "after", "kept"], "th"),
        _row(["parameters", f"{report.params_before:,}", f"{report.params_after:,}", f"{report.params_ratio:.1%}"]),
        _row([f"GFLOPs@{h}x{w}", f"{report.gflops_before:.3f}", f"{report.gflops_after:.3f}",
              f"{report.gflops_ratio:.1%}"]),
    ]
    return (f'<table style="{_STYLE}"><caption style="text-align:left">{html.escape(caption)}: '
            f"{report.units_removed:,} channel units removed</caption>{''.join(rows)}</table>")


def pruned_html(pruned: "Pruned") -> str:
    """The report's table, captioned with where the model came from, the criterion and the groups cut."""
    source = pruned.source.name if pruned.source else "a model in memory"
    settings = pruned.plan.settings or {}
    how = ", ".join(f"{k}={settings[k]:.3g}" if isinstance(settings[k], float) else f"{k}={settings[k]}"
                    for k in ("criterion", "ratio", "scope", "round_to") if k in settings)
    groups = sum(1 for v in pruned.plan.remove.values() if v)
    caption = f"pruned from {source}" + (f" ({how})" if how else "") + f", {groups} groups cut"
    return report_html(pruned.report, caption)
