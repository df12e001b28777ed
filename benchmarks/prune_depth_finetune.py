"""The headline table: speed-up from width, depth and both, with the mAP50-95 kept after fine-tuning on the synthetic
shapes data.

    python benchmarks/prune_depth_finetune.py [--models embedded yolo11n.yaml] [--targets 0.3 0.4 0.5]
        [--start-epochs 30] [--epochs 5] [--seed 0] [--threads 1] [--repeats 3] [--work DIR]

Per model (the embedded YOLOv8s, whose head ultralytics rebuilds for the shapes' 4 classes; yolo11n from its yaml):
  1. a start model: trained `--start-epochs` on the synthetic shapes (pruning.job.synthetic, detect labels, imgsz 128,
     the job's own trainer call: pruning.job.finetuning.train_to);
  2. one-shot pruning of the start model to each target fraction of its GFLOPs@640 removed, three ways, as in
     benchmarks/prune_depth_latency.py (criterion l1, round_to 8, scope all, min_channels 8): width (depth="never"),
     depth (depth="only"; a row says where blocks alone cannot reach the target) and both (depth="auto");
  3. every pruned model AND the unpruned start model fine-tuned `--epochs` with the same settings (the job's
     pruning.job.finetuning.finetune_to, the trainer that keeps the pruned architecture), each validated with the
     job's pruning.job.metrics.validate; mAP kept = pruned-after-fine-tuning / unpruned-after-the-same-fine-tuning;
  4. the fine-tuned checkpoints of one model timed in ONE interleaved call (pruning.measure: onnxruntime CPU, batch 1
     at 640, warm-up, `--repeats` rounds, order rotated): min and median, speed-up = unpruned / pruned.
Checkpoints and ultralytics run folders go under `--work` (default /tmp/prune_depth_finetune); a checkpoint that is
already there is reused, so an interrupted run resumes.  The results are written after every model.
Results: benchmarks/results/prune_depth_finetune.{json,md}.
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

import torch  # noqa: E402

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from fxgraph import stats  # noqa: E402
from pruning.criteria import Precomputed, get_criterion  # noqa: E402
from pruning.job.config import load_config  # noqa: E402
from pruning.job.finetuning import finetune_to, train_to  # noqa: E402
from pruning.job.metrics import validate  # noqa: E402
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset  # noqa: E402
from pruning.latency import LatencyOptions, measure_latency  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODES = {"width": "never", "depth": "only", "both": "auto"}
TRAIN_IMGSZ = 128  # the job's default training / validation size on the synthetic shapes
LATENCY_IMGSZ = 640
CRITERION = "l1"


def source_of(name: str) -> tuple[str, str]:
    """(weights path or yaml to train the start model from, a label for the table)."""
    if name == "embedded":
        return str(fxgraph.embedded_weights()), "embedded YOLOv8s (fall_detection best.pt)"
    return name, f"{name} (from its yaml)"


def key_of(mode: str, target: float) -> str:
    return "unpruned" if mode == "unpruned" else f"{mode}-{round(target * 100)}"


def prune_all(start: Path, work: Path, targets: list[float], modes: list[str]) -> list[dict]:
    """One-shot pruning of `start` to each (target, mode); a row per plan with its checkpoint (under `work`), or
    `unreachable`."""
    work.mkdir(parents=True, exist_ok=True)
    g = fxgraph.trace(str(start), imgsz=LATENCY_IMGSZ)
    coupling = pruning.analyze(g)
    scores = Precomputed(get_criterion(CRITERION)(g, coupling), CRITERION)
    rows = [{"mode": "unpruned", "target": 0.0, "params": stats.num_params(g), "gflops": stats.gflops(g),
             "gflops_removed": 0.0, "blocks_removed": 0, "weights": str(start)}]
    for target in targets:
        for mode in modes:
            path = work / f"{key_of(mode, target)}-pruned.pt"
            t0 = time.perf_counter()
            try:
                plan, report = pruning.plan_for_target(
                    g, target, metric="gflops", criterion=scores if mode == "width" else CRITERION, depth=MODES[mode],
                    scope="all", min_channels=8, round_to=8, coupling=coupling)
            except pruning.PlanError as exc:
                rows.append({"mode": mode, "target": target, "unreachable": str(exc)})
                print(f"{mode} {target}: {exc}", flush=True)
                continue
            cut = pruning.prune(g, plan)
            if not path.is_file():
                cut.save(path, half=False)
            rows.append({"mode": mode, "target": target, "params": report.params_after, "gflops": report.gflops_after,
                         "gflops_removed": 1 - report.gflops_ratio, "blocks_removed": len(plan.blocks),
                         "blocks": list(plan.blocks), "channel_units_removed": plan.num_removed, "weights": str(path),
                         "plan_s": round(time.perf_counter() - t0, 1)})
            print(f"{mode} {target}: {report}", flush=True)
    return rows


def finetune_all(rows: list[dict], settings, data: Path, work: Path, epochs: int) -> None:
    """mAP50-95 before and after `epochs` of fine-tuning of every row's checkpoint (the unpruned one included)."""
    for row in rows:
        if "unreachable" in row:
            continue
        name = key_of(row["mode"], row["target"])
        weights = Path(row["weights"])
        row["before_ft"] = validate(weights, settings, data, work)
        tuned = work / f"{name}-ft{epochs}.pt"
        t0 = time.perf_counter()
        if not tuned.is_file():
            finetune_to(weights, settings, data, work, f"ft{epochs}-{name}", epochs, tuned)
        row["finetune_s"] = round(time.perf_counter() - t0)
        row["after_ft"] = validate(tuned, settings, data, work)
        row["finetuned_weights"] = str(tuned)
        print(f"{name}: mAP50-95 {row['before_ft']['map50_95']:.4f} -> {row['after_ft']['map50_95']:.4f} "
              f"after {epochs} epochs ({row['finetune_s']} s)", flush=True)
    base = rows[0]["after_ft"]["map50_95"]
    for row in rows:
        if "after_ft" in row:
            row["map_kept"] = row["after_ft"]["map50_95"] / base if base > 0 else None


def time_all(rows: list[dict], threads: list[int], repeats: int, warmup: int) -> None:
    """Latency of every fine-tuned checkpoint, per thread count in one interleaved call with the unpruned one."""
    timed = [r for r in rows if "finetuned_weights" in r]
    models = [fxgraph.load_ultralytics(r["finetuned_weights"]) for r in timed]
    for t in threads:
        opts = LatencyOptions(imgsz=LATENCY_IMGSZ, runtime="onnxruntime", threads=t, warmup=warmup, repeats=repeats)
        print(f"timing {len(models)} models interleaved: {opts.conditions()}", flush=True)
        lats = measure_latency(models, opts)
        for row, lat in zip(timed, lats):
            row[f"t{t}"] = {"min_ms": lat.min_ms, "median_ms": lat.median_ms, "runs_ms": list(lat.runs_ms),
                            "speedup": lats[0].min_ms / lat.min_ms, "speedup_median": lats[0].median_ms / lat.median_ms}


def markdown(meta: dict, models: list[dict], threads: list[int]) -> str:
    """The headline table per model: GFLOPs removed, blocks removed, speed-up, mAP50-95 before/after fine-tuning."""
    lines = [f"`{meta['command']}`", "", f"machine: {meta['machine']}", "",
             *([f"note: {meta['note']}", ""] if meta.get("note") else []),
             f"start models trained {meta['start_epochs']} epochs"
             + (f" then {meta['more_epochs']} more (a second trainer run from that checkpoint)" if meta.get("more_epochs") else "")
             + f" on the synthetic shapes (imgsz {TRAIN_IMGSZ}, seed "
             f"{meta['seed']}, {meta['n_train']} train / {meta['n_val']} val images); every model below, the unpruned "
             f"one included, fine-tuned {meta['epochs']} epochs with the same settings; criterion {CRITERION}, "
             f"round_to 8, scope all, min_channels 8; latency of the fine-tuned checkpoints: onnxruntime CPU at "
             f"{LATENCY_IMGSZ}, batch 1, {meta['warmup']} warm-up, {meta['repeats']} interleaved repeats in one call "
             f"per thread count. mAP kept = mAP50-95 after fine-tuning / the unpruned model's after the same "
             f"fine-tuning. One seed: differences of a few points of mAP are within run-to-run noise.", ""]
    head = ("| model | mode | target | GFLOPs removed | blocks removed | mAP50-95 pruned (before ft) | mAP50-95 after ft"
            " | mAP kept | " + " | ".join(f"{t} thread(s): ms min / median, speed-up min (median)" for t in threads)
            + " |")
    lines += [head, "|" + "---|" * (8 + len(threads))]
    for m in models:
        for r in m["rows"]:
            if "unreachable" in r:
                lines.append(f"| {m['label']} | {r['mode']} | {r['target']:.0%} | {r['unreachable']} | | | | | "
                             + " | ".join("" for _ in threads) + " |")
                continue
            before = f"{r['before_ft']['map50_95']:.3f}" if "before_ft" in r else ""
            after = f"{r['after_ft']['map50_95']:.3f}" if "after_ft" in r else ""
            kept = f"{r['map_kept']:.1%}" if r.get("map_kept") is not None else ""
            cells = [f"{x['min_ms']:.0f} / {x['median_ms']:.0f}, {x['speedup']:.2f}x ({x['speedup_median']:.2f}x)"
                     if (x := r.get(f"t{t}")) else "" for t in threads]
            lines.append(f"| {m['label']} | {r['mode']} | {r['target']:.0%} | {r['gflops_removed']:.1%} | "
                         f"{r['blocks_removed']} | {before} | {after} | {kept} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["embedded", "yolo11n.yaml"])
    ap.add_argument("--targets", nargs="+", type=float, default=[0.3, 0.4, 0.5])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--start-epochs", type=int, default=30)
    ap.add_argument("--more-epochs", type=int, default=0,
                    help="then train the start model this many epochs more (a second trainer run from its checkpoint)")
    ap.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs of every model, the unpruned one too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/prune_depth_finetune"))
    ap.add_argument("--out", default=str(RESULTS / "prune_depth_finetune"))
    ap.add_argument("--note", default=None, help="measuring conditions to record (load, other work on the machine)")
    args = ap.parse_args()
    t_start, load_before = time.time(), os.getloadavg()
    settings = load_config(overrides={"imgsz": TRAIN_IMGSZ, "batch": args.batch, "device": "cpu", "workers": 0,
                                      "seed": args.seed})
    shapes = ShapesConfig(imgsz=TRAIN_IMGSZ, seed=args.seed)
    data = make_shapes_dataset(args.work / "datasets", shapes, "detect")
    meta = {"command": "python benchmarks/prune_depth_finetune.py " + " ".join(sys.argv[1:]).split(" --note")[0],
            "note": args.note, "start_epochs": args.start_epochs, "more_epochs": args.more_epochs, "epochs": args.epochs, "seed": args.seed,
            "n_train": shapes.n_train, "n_val": shapes.n_val, "criterion": CRITERION, "round_to": 8,
            "latency_imgsz": LATENCY_IMGSZ, "repeats": args.repeats, "warmup": args.warmup}
    out = Path(args.out)
    models: list[dict] = []
    for name in args.models:
        source, label = source_of(name)
        work = args.work / Path(name).stem
        work.mkdir(parents=True, exist_ok=True)
        start = work / "start.pt"
        t0 = time.perf_counter()
        if not start.is_file():
            train_to(source, settings, data, work, args.start_epochs, start, name="start")
        if args.more_epochs:
            more = work / f"start+{args.more_epochs}.pt"
            if not more.is_file():
                train_to(str(start), settings, data, work, args.more_epochs, more, name=f"start+{args.more_epochs}")
            start = more
        print(f"{name}: start model ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows = prune_all(start, work / start.stem, args.targets, args.modes)
        finetune_all(rows, settings, data, work / start.stem, args.epochs)
        time_all(rows, args.threads, args.repeats, args.warmup)
        models.append({"model": name, "label": label, "rows": rows})
        machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "onnxruntime": __import__("onnxruntime").__version__,
                   "loadavg_before": load_before, "loadavg_now": os.getloadavg(), "seconds": round(time.time() - t_start)}
        meta["machine"] = machine
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps({**meta, "models": models}, indent=1))
        out.with_suffix(".md").write_text(markdown(meta, models, args.threads))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
