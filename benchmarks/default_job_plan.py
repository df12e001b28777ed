"""The default job's pruning steps replayed without training, and the speed-up of the result at 640.

    python benchmarks/default_job_plan.py [--model yolov8n-seg.yaml] [--step-ratio 0.15] [--steps 4] [--depth auto]

What `python -m pruning` does to the architecture with default.yaml's settings (scope all, round_to 8,
min_channels 8, `step_ratio` of the remaining channels per step plus, with prune_depth auto, `step_ratio` of the
residual blocks that may go, at least one), on random weights (BatchNorm recalibrated) scored by l1 instead of
DetDSHAP (no data needed; the widths per step are the same, which channels go differs).  Then the unpruned and the
pruned model are timed in one interleaved call (onnxruntime CPU, 1 thread, batch 1 at 640, 2 warm-up, 8 repeats).
Used to choose the default job's settings before paying for its training.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from fxgraph import stats  # noqa: E402
from pruning.criteria import Precomputed  # noqa: E402
from pruning.depth_plan import score_with_blocks, step_blocks  # noqa: E402
from pruning.latency import LatencyOptions, measure_latency  # noqa: E402
from random_models import random_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="yolov8n-seg.yaml")
    ap.add_argument("--step-ratio", type=float, default=0.15)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--depth", default="auto", choices=["never", "auto"])
    ap.add_argument("--imgsz", type=int, default=128)
    args = ap.parse_args()
    g = fxgraph.trace(random_model(args.model), imgsz=args.imgsz)
    g0, p0 = stats.gflops(g), stats.num_params(g)
    for k in range(1, args.steps + 1):
        scores = score_with_blocks(g, pruning.analyze(g), "l1", "all")
        blocks = step_blocks(g, scores, args.step_ratio, "all") if args.depth == "auto" else None
        plan = pruning.plan(g, ratio=args.step_ratio, scope="all", criterion=Precomputed(scores, "l1"), min_channels=8,
                            round_to=8, blocks=blocks)
        g = pruning.prune(g, plan).graph
        print(f"step {k}: {1 - stats.gflops(g) / g0:.1%} of GFLOPs and {1 - stats.num_params(g) / p0:.1%} of params "
              f"removed; blocks {blocks or []}", flush=True)
    base = fxgraph.trace(random_model(args.model), imgsz=args.imgsz)
    opts = LatencyOptions(imgsz=640, threads=1, warmup=2, repeats=8)
    lat = measure_latency([base.model, g.model], opts)
    print(f"{opts.conditions()}; load {os.getloadavg()}: unpruned {lat[0].min_ms:.1f} / {lat[0].median_ms:.1f} ms, "
          f"pruned {lat[1].min_ms:.1f} / {lat[1].median_ms:.1f} ms (min / median): speed-up "
          f"{lat[0].min_ms / lat[1].min_ms:.2f}x (median {lat[0].median_ms / lat[1].median_ms:.2f}x)")


if __name__ == "__main__":
    main()
