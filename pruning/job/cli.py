"""Command line of the pruning pipeline (ultralytics-style key=value overrides of default.yaml):

    python -m pruning [--pretrained W] [--cfg default.yaml] [key=value ...]       prune → fine-tune → report
    python -m pruning score --pretrained W [--out scores.json [--force]] [key=value ...]   scores only (torchrun-able)
    python -m pruning compare [--cfg F] [key=value ...]                            criteria side by side

Bad input (settings, weights, data, an existing --out file without --force, an unwritable location) prints one line
`error: ...` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import fxgraph
import relprop

from fxgraph.argparsing import OneLineParser
from fxgraph.outputs import write_text

from ..errors import OutputError, PruningError
from .config import Settings, load_config


def _parser(prog: str = "python -m pruning") -> argparse.ArgumentParser:
    p = OneLineParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", help="run (default), score or compare")
    p.add_argument("--pretrained", default=None, help="weights to prune (default: train `model` on `data` first)")
    p.add_argument("--cfg", default=None, help="settings yaml (default: the repository's default.yaml)")
    p.add_argument("--out", default=None, help="score: where to write the scores JSON (an existing file only with "
                   "--force)")
    p.add_argument("--force", action="store_true", help="score: replace an existing --out file")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. criterion=hsic step_ratio=0.2")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m pruning") -> int:
    """Run the command line; returns the exit status (2 with one line on stderr for our errors)."""
    args = _parser(prog).parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.command not in ("run", "score", "compare"):
        if "=" in args.command:  # `python -m pruning key=value ...`
            overrides.insert(0, args.command)
            args.command = "run"
        else:
            print(f"error: unknown command '{args.command}'; use run, score or compare", file=sys.stderr)
            return 2
    if args.pretrained is not None:
        overrides.append(f"pretrained={args.pretrained}")
    try:
        settings = load_config(args.cfg, overrides)
        if args.command == "score":
            return _score(settings, args.out, args.force)
        if args.command == "compare":
            from .compare import compare

            out = compare(settings)
            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote it
                print(f"comparison written to {out}/compare.md and compare.png")
            return 0
        from .pipeline import PruningJob
        from .report import run_summary

        out = PruningJob.from_settings(settings).run()
        print(f"run finished: {out} (report.md, trend.png, weights/)")
        print(run_summary(out))  # the last line: what the pruning bought, measured speed-up included
        return 0
    except (PruningError, fxgraph.FxGraphError, relprop.RelpropError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


def _score(settings: Settings, out: str | None, force: bool = False) -> int:
    """Score every group with the configured criterion; under torchrun each rank scores its shard."""
    from ..api import analyze
    from ..criteria import build_criterion, criterion_spec, distributed
    from ..devices import torch_device
    from .datasets import dataset, lazy_calibration
    from .preflight import check_score_inputs
    from .tracecache import traced

    if settings.pretrained is None:
        raise PruningError("score needs --pretrained WEIGHTS")
    check_score_inputs(settings, out, force)  # --out, dataset folder, classes: before any dataset or scoring
    rank, world = distributed.init(settings.device)
    try:
        graph = traced(settings.pretrained, settings.imgsz, torch_device(settings.device))
        # the dataset is made (or the synthetic one written) only for a criterion that reads data
        data = dataset(settings) if criterion_spec(settings.criterion).needs_data else None
        calib = lazy_calibration(settings, data, settings.pretrained, rank, world) if data is not None else None
        scores = build_criterion(settings.criterion, settings, calib)(graph, analyze(graph))
        if rank == 0:
            text = json.dumps({k: v.tolist() for k, v in scores.items()}, indent=1)
            if out:
                write_text(out, text, error=OutputError)
                print(f"scores of {len(scores)} groups written to {out} ({world} process(es))")
            else:
                print(text)
    finally:
        distributed.finish()
    return 0

