"""How close `plan_for_target(metric="latency", target=0.5)` lands: the embedded YOLOv8s, L1, round_to 8, no fine-tuning.

    python benchmarks/latency_target.py [--target 0.5] [--threads 1] [--repeats 5] [--check-repeats 10]

The bisection measures each candidate against the unpruned model (onnxruntime CPU at 640, `--repeats` interleaved);
the plan it returns is then timed again, independently, against the unpruned model with `--check-repeats`
repeats.  Results: benchmarks/results/latency_target.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from pruning.latency import LatencyOptions, measure_latency  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check-repeats", type=int, default=10)
    ap.add_argument("--resolution", type=float, default=0.03)
    args = ap.parse_args()
    t0 = time.time()
    g = fxgraph.trace(str(fxgraph.embedded_weights()), imgsz=640)
    opts = LatencyOptions(imgsz=640, threads=args.threads, warmup=1, repeats=args.repeats)
    plan, report = pruning.plan_for_target(g, args.target, metric="latency", criterion="l1", min_channels=8,
                                           round_to=8, latency=opts, resolution=args.resolution)
    search_s = time.time() - t0
    cut = pruning.prune(g, plan).model
    check = LatencyOptions(imgsz=640, threads=args.threads, warmup=2, repeats=args.check_repeats)
    base, mine = measure_latency([g.model, cut], check)
    result = {"command": "python benchmarks/latency_target.py " + " ".join(sys.argv[1:]),
              "machine": "2-core shared VM, no GPU", "search": opts.conditions(), "check": check.conditions(),
              "target": args.target, "channel_ratio": plan.settings["ratio"], "gflops_removed": 1 - report.gflops_ratio,
              "search_s": round(search_s), "unpruned_min_ms": base.min_ms, "pruned_min_ms": mine.min_ms,
              "unpruned_median_ms": base.median_ms, "pruned_median_ms": mine.median_ms,
              "latency_ratio_min": mine.min_ms / base.min_ms, "latency_ratio_median": mine.median_ms / base.median_ms}
    out = Path(__file__).resolve().parent / "results" / "latency_target.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
