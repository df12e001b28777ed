"""Speed-up from width, depth and both: onnxruntime CPU at 640, no fine-tuning (latency only).

    python benchmarks/prune_depth_latency.py [--models embedded yolo11n.yaml] [--targets 0.3 0.4 0.5]
                                             [--threads 1 2] [--repeats 3] [--criterion l1|detdshap]

Each model (the embedded YOLOv8s; yolo11n with random weights, BatchNorm recalibrated: benchmarks/random_models.py)
is pruned in one shot to each target fraction of its GFLOPs@640 removed, three ways, all with round_to 8, scope
all, min_channels 8 and the same criterion:
  width  channels only (pruning.plan_for_target, depth="never": bisected channel ratio)
  depth  residual blocks only (depth="only": weakest blocks first; where every block that may go does not reach
         the target, the row says how far it got)
  both   channels and blocks (depth="auto": per step whichever removes more GFLOPs per unit of score lost)
Then, per thread count, every model of one family (the unpruned one included) is exported to ONNX and timed in ONE
interleaved call (pruning.measure: batch 1 at 640x640, warm-up, `--repeats` rounds, order rotated each round): min
and median per model; speed-up = unpruned min / pruned min (and medians) from that same call.
No fine-tuning here: the mAP kept after fine-tuning on the synthetic data belongs to the job's compare rows.
Results: benchmarks/results/prune_depth_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from fxgraph import stats  # noqa: E402
from pruning.criteria import Precomputed, get_criterion  # noqa: E402
from pruning.depth_plan import removable_blocks  # noqa: E402
from pruning.latency import LatencyOptions, measure_latency  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {"width": "never", "depth": "only", "both": "auto"}


def load(name: str) -> tuple[torch.nn.Module, str]:
    if name == "embedded":
        return fxgraph.load_ultralytics(str(fxgraph.embedded_weights())), "embedded YOLOv8s (fall_detection best.pt)"
    from random_models import random_model

    return random_model(name), f"{name} (random weights, BatchNorm recalibrated)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["embedded", "yolo11n.yaml"])
    ap.add_argument("--targets", nargs="+", type=float, default=[0.3, 0.4, 0.5])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2],
                    help="onnxruntime thread counts to time; none: build the plans only (with --plans-out)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--criterion", default="l1", help="a data-free criterion, or detdshap (scored on the model's own "
                    "candidates in bus.jpg and zidane.jpg)")
    ap.add_argument("--out", default=str(RESULTS / "prune_depth_latency"))
    ap.add_argument("--plans-out", type=Path, default=None,
                    help="also write every plan (JSON) here, for timing the same cuts elsewhere: gpu_suite.py --plans")
    args = ap.parse_args()
    t_start = time.time()
    load_before = os.getloadavg()
    rows: list[dict] = []
    plans: dict[str, dict] = {}
    for name in args.models:
        model, label = load(name)
        g = fxgraph.trace(model, imgsz=args.imgsz)
        coupling = pruning.analyze(g)
        crit = calibrated(g, args) if args.criterion == "detdshap" else args.criterion
        scores = Precomputed((crit if args.criterion == "detdshap" else get_criterion(crit))(g, coupling),
                             args.criterion)
        family = [{"model": label, "mode": "unpruned", "target": 0.0, "params": stats.num_params(g),
                   "gflops": stats.gflops(g), "blocks_removed": 0}]
        models = [g.model]
        for target in args.targets:
            for mode in args.modes:
                t0, row_target = time.perf_counter(), target
                try:
                    plan, report = pruning.plan_for_target(g, target, metric="gflops", criterion=scores if mode == "width"
                                                           else crit, depth=MODES[mode], scope="all",
                                                           min_channels=8, round_to=8, coupling=coupling)
                except pruning.PlanError as exc:
                    family.append({"model": label, "mode": mode, "target": target, "unreachable": str(exc)})
                    print(f"{name} {mode} {target}: {exc}", flush=True)
                    if mode == "depth" and not any(r["mode"] == "depth" and r["target"] == "all" for r in family):
                        # depth alone stops short of the target: time every removable block gone instead
                        plan = most_blocks(g, coupling, crit)
                        report = pruning.dry_run(g, plan)
                        row_target = "all"
                    else:
                        continue
                cut = pruning.prune(g, plan)
                plans.setdefault(name, {"label": label, "rows": []})["rows"].append(
                    {"mode": mode, "target": row_target, "gflops_removed": 1 - report.gflops_ratio,
                     "blocks_removed": len(plan.blocks), "plan": plan.to_json()})
                family.append({"model": label, "mode": mode, "target": row_target, "params": report.params_after,
                               "gflops": report.gflops_after, "gflops_removed": 1 - report.gflops_ratio,
                               "blocks_removed": len(plan.blocks), "blocks": list(plan.blocks),
                               "channel_units_removed": plan.num_removed, "plan_s": time.perf_counter() - t0})
                models.append(cut.model)
                print(f"{name} {mode} {row_target}: {report} ({time.perf_counter() - t0:.0f} s)", flush=True)
        timed = [r for r in family if "unreachable" not in r]
        for threads in args.threads:
            opts = LatencyOptions(imgsz=args.imgsz, runtime="onnxruntime", threads=threads, warmup=args.warmup,
                                  repeats=args.repeats)
            print(f"timing {len(models)} models interleaved: {opts.conditions()}", flush=True)
            lats = measure_latency(models, opts)
            for row, lat in zip(timed, lats):
                row[f"t{threads}"] = {"min_ms": lat.min_ms, "median_ms": lat.median_ms, "runs_ms": list(lat.runs_ms),
                                      "speedup": lats[0].min_ms / lat.min_ms,
                                      "speedup_median": lats[0].median_ms / lat.median_ms}
        rows += family
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": os.cpu_count(),
               "onnxruntime": __import__("onnxruntime").__version__, "loadavg_before": load_before,
               "loadavg_after": os.getloadavg(), "seconds": round(time.time() - t_start)}
    meta = {"command": "python benchmarks/prune_depth_latency.py " + " ".join(sys.argv[1:]), "machine": machine,
            "criterion": args.criterion, "round_to": 8, "imgsz": args.imgsz, "repeats": args.repeats,
            "warmup": args.warmup, "fine_tuned": False}
    if args.plans_out:
        args.plans_out.parent.mkdir(parents=True, exist_ok=True)
        args.plans_out.write_text(json.dumps({**meta, "models": plans}, indent=1))
        print(f"plans: {args.plans_out}")
    if not args.threads:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows, args.threads))
    print(out.with_suffix(".md").read_text())


def calibrated(g, args: argparse.Namespace):
    """DetDSHAP on the model's own most confident candidates in ultralytics's bus.jpg and zidane.jpg (8 each, at
    `--imgsz`; scoring_throughput.calibration): two images only, enough to rank filters for a latency table (no
    fine-tuning here), not a calibration set for a model you ship."""
    from scoring_throughput import calibration

    from pruning.criteria import DetDSHAP

    return DetDSHAP(calibration(g, args.imgsz, 2, 1, 8), boxes="labels", iou=0.5)


def most_blocks(g, coupling, criterion) -> "pruning.Plan":
    """The plan that removes as many residual blocks as can go without emptying a module (depth alone, no channels)."""
    for n in range(len(removable_blocks(g)), 0, -1):
        try:
            return pruning.plan(g, blocks=n, criterion=criterion, coupling=coupling)
        except pruning.BlockError:
            continue
    raise pruning.PlanError("no residual block can be removed")


def _target(target: float | str) -> str:
    """A target fraction as a percentage; 'all' (every removable block, depth alone) as it is."""
    return target if isinstance(target, str) else f"{target:.0%}"


def markdown(meta: dict, rows: list[dict], threads: list[int]) -> str:
    """The headline table: speed-up (min; median) per model, target and mode, with command and machine."""
    head = "| model | mode | target | GFLOPs removed | blocks | " + " | ".join(
        f"{t} thread(s): ms min / median, speed-up min (median)" for t in threads) + " |"
    lines = [f"`{meta['command']}`", "", f"machine: {meta['machine']}", "",
             f"criterion {meta['criterion']}, round_to 8, onnxruntime CPU at {meta['imgsz']}, batch 1, "
             f"{meta['warmup']} warm-up, {meta['repeats']} interleaved repeats per call, not fine-tuned", "",
             head, "|" + "---|" * (5 + len(threads))]
    for r in rows:
        if "unreachable" in r:
            lines.append(f"| {r['model']} | {r['mode']} | {_target(r['target'])} | {r['unreachable']} | | "
                         + " | ".join("" for _ in threads) + " |")
            continue
        cells = []
        for t in threads:
            m = r.get(f"t{t}")
            cells.append(f"{m['min_ms']:.0f} / {m['median_ms']:.0f}, {m['speedup']:.2f}x ({m['speedup_median']:.2f}x)"
                         if m else "")
        removed = r.get("gflops_removed", 0.0)
        lines.append(f"| {r['model']} | {r['mode']} | {_target(r['target'])} | {removed:.1%} | {r['blocks_removed']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
