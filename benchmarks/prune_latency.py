"""Deployment latency of pruned YOLOv8s: onnxruntime CPU at 640, per criterion, GFLOPs target and round_to.

    python benchmarks/prune_latency.py [--criteria l1 random taylor detdshap] [--targets 0.3 0.4 0.5]
                                       [--round-to 1 8] [--extra-round-to 16 32] [--threads 1] [--repeats 5]

The embedded YOLOv8s (fall_detection best.pt, classes Normal/Fall) is pruned in one shot, WITHOUT fine-tuning, to
each target fraction of its GFLOPs@640 removed (scope all, min_channels 8; the channel ratio is found by
bisection, pruning.plan_for_target), for each criterion and each round_to; the first criterion is also run with
`--extra-round-to`.  Every model (the unpruned one included) is then exported to ONNX and timed by
pruning.latency in ONE call: batch 1 at 640x640, onnxruntime CPUExecutionProvider with `--threads` threads, warm-up,
then `--repeats` rounds in which every model runs once (order rotated each round); min and median per model, and
the speed-up = unpruned min / pruned min from that same call.

Accuracy: no ground-truth set for this model ships offline, so "mAP50-95 kept" is the mAP50-95 of each pruned model
against the UNPRUNED model's own detections (conf >= 0.25) on a few images (ultralytics's bus.jpg and zidane.jpg
and their horizontal flips), i.e. how much of the unpruned model's output survives pruning, not accuracy on
labelled data.  The same pseudo-labelled images calibrate taylor and detdshap (at `--calib-imgsz`).
Results: benchmarks/results/prune_latency.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from fxgraph import stats  # noqa: E402
from pruning.criteria import (HSIC, DetDSHAP, Precomputed, RandomCriterion, Taylor, get_criterion,  # noqa: E402
                              load_calibration)
from pruning.job.metrics import val_metrics  # noqa: E402
from pruning.latency import LatencyOptions, measure_latency  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def pseudo_dataset(weights: Path, root: Path, imgsz: int) -> tuple[Path, int]:
    """A dataset yaml whose labels are the unpruned model's own detections (conf >= 0.25) on the bundled images."""
    import cv2
    import ultralytics
    from ultralytics import YOLO

    images = root / "images"
    labels = root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for src in sorted((Path(ultralytics.__file__).parent / "assets").glob("*.jpg")):
        img = cv2.imread(str(src))
        cv2.imwrite(str(images / src.name), img)
        cv2.imwrite(str(images / f"{src.stem}_flip.jpg"), img[:, ::-1])
    model = YOLO(str(weights))
    n_boxes = 0
    for res in model.predict(str(images), imgsz=imgsz, conf=0.25, verbose=False):
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
                for c, (x, y, w, h) in zip(res.boxes.cls.tolist(), res.boxes.xywhn.tolist())]
        n_boxes += len(rows)
        (labels / (Path(res.path).stem + ".txt")).write_text("\n".join(rows) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text(json.dumps({"path": str(root), "train": "images", "val": "images", "names": model.names}))
    return yaml, n_boxes


def build(name: str, calib) -> pruning.Criterion:
    """The criterion `name` (data-driven ones on the calibration batches)."""
    if name == "detdshap":
        return DetDSHAP(calib(), boxes="labels")
    if name == "taylor":
        return Taylor(calib())
    if name == "hsic":
        return HSIC(calib())
    if name == "random":
        return RandomCriterion(seed=0)
    return get_criterion(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", nargs="+", default=["l1", "random", "taylor", "detdshap"])
    ap.add_argument("--targets", nargs="+", type=float, default=[0.3, 0.4, 0.5])
    ap.add_argument("--round-to", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--extra-round-to", nargs="*", type=int, default=[16, 32], help="for the first criterion only")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calib-imgsz", type=int, default=320)
    ap.add_argument("--no-map", action="store_true", help="skip the mAP50-95-kept validation and the plot")
    ap.add_argument("--out", default=str(RESULTS / "prune_latency"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.threads))
    weights = fxgraph.embedded_weights()
    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="prune_latency-"))
    try:
        data, n_boxes = pseudo_dataset(weights, tmp / "data", args.imgsz)
        n_images = len(list((tmp / "data" / "images").iterdir()))
        g = fxgraph.trace(str(weights), imgsz=args.imgsz)
        coupling = pruning.analyze(g)
        g_small = fxgraph.trace(str(weights), imgsz=args.calib_imgsz)  # scoring at the calibration size
        cache = []

        def calib():
            if not cache:
                cache.append(load_calibration(data, "detect", args.calib_imgsz, n_images, batch=n_images,
                                              stride=int(max(g.stride))))
            return cache[0]

        configs = [(c, t, r) for c in args.criteria for r in args.round_to for t in args.targets]
        configs += [(args.criteria[0], t, r) for r in args.extra_round_to for t in args.targets]
        rows = [{"criterion": "unpruned", "target": 0.0, "round_to": None, "channel_ratio": 0.0,
                 "params": stats.num_params(g), "gflops": stats.gflops(g), "score_s": 0.0}]
        models = [g.model]
        scored: dict[str, tuple[Precomputed, float]] = {}
        for name, target, round_to in configs:
            if name not in scored:
                t0 = time.perf_counter()
                scores = build(name, calib)(g_small, pruning.analyze(g_small))
                scored[name] = (Precomputed(scores, name), time.perf_counter() - t0)
                print(f"scored {name} in {scored[name][1]:.1f} s", flush=True)
            plan, report = pruning.plan_for_target(g, target, metric="gflops", scope="all", criterion=scored[name][0],
                                                   min_channels=8, round_to=round_to, coupling=coupling)
            cut = pruning.prune(g, plan)
            row = {"criterion": name, "target": target, "round_to": round_to, "channel_ratio": plan.settings["ratio"],
                   "params": report.params_after, "gflops": report.gflops_after, "score_s": scored[name][1]}
            if not args.no_map:
                row["weights"] = str(cut.save(tmp / f"{name}-{target:g}-r{round_to}.pt", half=False))
            rows.append(row)
            models.append(cut.model)
            print(f"{name} target {target} round_to {round_to}: {report}", flush=True)
        opts = LatencyOptions(imgsz=args.imgsz, runtime="onnxruntime", threads=args.threads, warmup=args.warmup,
                              repeats=args.repeats)
        print(f"timing {len(models)} models interleaved: {opts.conditions()}", flush=True)
        lats = measure_latency(models, opts)
        for row, lat in zip(rows, lats):
            row.update(latency_min_ms=lat.min_ms, latency_median_ms=lat.median_ms, runs_ms=list(lat.runs_ms),
                       speedup=lats[0].min_ms / lat.min_ms, speedup_median=lats[0].median_ms / lat.median_ms)
        if not args.no_map:
            from ultralytics import YOLO

            for row in rows:
                src = row.pop("weights", None) or str(weights)
                res = YOLO(src).val(data=str(data), imgsz=args.imgsz, batch=n_images, device="cpu", workers=0,
                                    plots=False, verbose=False, project=str(tmp / "val"), name="v", exist_ok=True)
                row.update(val_metrics(res))
            for row in rows:
                row["map50_95_kept"] = row["map50_95"] / rows[0]["map50_95"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": os.cpu_count(),
               "machine": "2-core shared VM, no GPU", "onnxruntime": __import__("onnxruntime").__version__,
               "seconds": round(time.time() - t_start)}
    conditions = opts.conditions() + "; min and median of the repeats, speed-up = unpruned min / pruned min"
    meta = {"imgsz": args.imgsz, "command": "python benchmarks/prune_latency.py " + " ".join(sys.argv[1:]),
            "machine": machine,
            "conditions": conditions, "model": "embedded YOLOv8s (fall_detection best.pt), not fine-tuned",
            "map_images": None if args.no_map else n_images, "map_pseudo_boxes": None if args.no_map else n_boxes}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows, not args.no_map))
    if not args.no_map:
        plot(rows, out.with_suffix(".png"), conditions)
    print(out.with_suffix(".md").read_text())


def markdown(meta: dict, rows: list[dict], with_map: bool) -> str:
    """The results table with its command, machine and conditions."""
    head = ["criterion", "GFLOPs removed", "round_to", "channels removed", "params", f"GFLOPs@{meta['imgsz']}",
            "latency min (ms)", "median (ms)", "speed-up (min)", "speed-up (median)"]
    if with_map:
        head.append("mAP50-95 kept")
    lines = [f"# Pruned YOLOv8s: onnxruntime CPU latency at {meta['imgsz']} (no fine-tuning)", "",
             f"`{meta['command']}` — {meta['machine']}", "", f"Conditions: {meta['conditions']}.", "",
             f"Model: {meta['model']}; one-shot pruning, scope all, min_channels 8, the channel ratio bisected to the "
             f"GFLOPs target.", ""]
    if with_map:
        lines += [f"mAP50-95 kept: against the unpruned model's own detections (conf >= 0.25, "
                  f"{meta['map_pseudo_boxes']} "
                  f"boxes) on {meta['map_images']} images (bus.jpg, zidane.jpg and their flips) — how much of the "
                  f"unpruned output survives, not accuracy on ground truth.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0]
    for r in rows:
        cells = [r["criterion"], f"{1 - r['gflops'] / base['gflops']:.1%}", str(r["round_to"] or "-"),
                 f"{r['channel_ratio']:.3f}", f"{r['params']:,}", f"{r['gflops']:.2f}", f"{r['latency_min_ms']:.1f}",
                 f"{r['latency_median_ms']:.1f}", f"{r['speedup']:.2f}×", f"{r['speedup_median']:.2f}×"]
        if with_map:
            cells.append(f"{r['map50_95_kept']:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, conditions: str) -> None:
    """Speed-up against mAP50-95 kept, one marker per criterion, round_to written next to each point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for name in dict.fromkeys(r["criterion"] for r in rows[1:]):
        mine = [r for r in rows if r["criterion"] == name]
        ax.scatter([r["map50_95_kept"] for r in mine], [r["speedup"] for r in mine], label=name)
        for r in mine:
            ax.annotate(f"{r['target']:.0%}/r{r['round_to']}", (r["map50_95_kept"], r["speedup"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 2))
    ax.scatter([1.0], [1.0], marker="*", s=120, color="k", label="unpruned")
    ax.set_xlabel("mAP50-95 kept (vs the unpruned model's own detections), no fine-tuning")
    ax.set_ylabel("speed-up, onnxruntime CPU at 640 (min)")
    ax.set_title("YOLOv8s pruned to 30/40/50% GFLOPs removed (label: target/round_to)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
