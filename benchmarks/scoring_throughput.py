"""How fast does DetDSHAP score calibration images, against ultralytics training on the same batch?  (issue 12)

    python benchmarks/scoring_throughput.py [--model yolov8n.yaml] [--imgsz 320] [--batch 4] [--batches 1]
                                            [--boxes 3] [--target all] [--repeats 3] [--device cpu] [--threads N]
                                            [--per-box] [--configs 8:1 16:4 ...]

One calibration set of `--batches` batches of `--batch` images (ultralytics's bus.jpg and zidane.jpg, letterboxed to
`--imgsz`, cycled), labelled with `--boxes` of the model's own most confident candidates per image (so every label
matches a candidate, also for random weights), is timed two ways, interleaved, after one warm-up:

* scoring  — `DetDSHAP(calibration, target=...).filter_stats(graph)`: what scoring costs end to end (BatchNorm folding
             and the rule rewrite included, once per call as in a pruning run);
* training — ultralytics's own training step on the same batches: `model.loss(batch)` (forward + loss) and
             `loss.sum().backward()`, no optimiser step.

`--configs` times several DetDSHAP (batch, chunk) settings side by side (chunk > 1 vmaps that many backward slots
at once).  `--per-box` also times the scoring loop used before batching (one explain per box and kind).  All run on
`--device` (cuda is synchronised around every timing).  Reported: images per second from the minimum and
the median time, and their ratio (the issue's goal: scoring ≥ 1/3 of training throughput).  Writes
benchmarks/results/scoring_throughput.json and .md (`--out` changes the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import torch  # noqa: E402
import ultralytics  # noqa: E402
from bench_timing import interleaved  # noqa: E402
from random_models import random_model  # noqa: E402

ASSETS = Path(ultralytics.__file__).parent / "assets"
RESULTS = ROOT / "benchmarks" / "results"


def load_model(name: str) -> torch.nn.Module:
    """The ultralytics model; a .yaml gets random weights with BatchNorm statistics recalibrated (random_models)."""
    import fxgraph

    return random_model(name) if str(name).endswith(".yaml") else fxgraph.load_ultralytics(name).eval()


def calibration(graph, imgsz: int, batch: int, batches: int, boxes: int):
    """A Calibration of `batches` ultralytics-style batches, labelled with the model's most confident candidates."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import DEFAULT_CFG

    from pruning.criteria.calibration import Calibration
    from relprop.target import xywh_to_xyxy

    sources = [cv2.imread(str(ASSETS / name)) for name in ("bus.jpg", "zidane.jpg")]
    letterboxed = [torch.from_numpy(LetterBox((imgsz, imgsz), auto=False)(image=s)[:, :, ::-1].copy()).permute(2, 0, 1)
                   for s in sources]
    out = []
    for b in range(batches):
        imgs = [letterboxed[(b * batch + i) % len(letterboxed)] for i in range(batch)]
        x = torch.stack(imgs).float().div(255).to(device=graph.device, dtype=graph.dtype)
        with torch.no_grad():
            pred = graph.module(x)[0]
        labels, classes, index = [], [], []
        for i in range(batch):
            p = pred[i]
            probs = p[4:4 + graph.nc]
            order = probs.amax(0).argsort(descending=True)
            xyxy = xywh_to_xyxy(p[:4, order].T).clamp(0, imgsz)
            keep = ((xyxy[:, 2] - xyxy[:, 0]) > 2) & ((xyxy[:, 3] - xyxy[:, 1]) > 2)
            for a, bx in zip(order[keep][:boxes].tolist(), xyxy[keep][:boxes].tolist()):
                x1, y1, x2, y2 = bx
                labels.append([(x1 + x2) / 2 / imgsz, (y1 + y2) / 2 / imgsz, (x2 - x1) / imgsz, (y2 - y1) / imgsz])
                classes.append([float(probs[:, a].argmax())])
                index.append(float(i))
        out.append({"img": torch.stack(imgs), "bboxes": torch.tensor(labels), "cls": torch.tensor(classes),
                    "batch_idx": torch.tensor(index)})
    return Calibration(out, "detect", imgsz, get_cfg(DEFAULT_CFG, {"imgsz": imgsz}))


def training_step(model: torch.nn.Module, calib, device: torch.device):
    """ultralytics's forward + loss + backward over every calibration batch (BatchNorm in eval: fixed statistics)."""
    import copy

    train = copy.deepcopy(model).float().to(device)
    train.args = calib.args
    train.train()
    for p in train.parameters():
        p.requires_grad_(True)
    batches = []
    for b in calib.batches:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        moved["img"] = b["img"].to(device).float() / 255
        batches.append(moved)

    def step():
        for b in batches:
            train.zero_grad(set_to_none=True)
            loss, _ = train.loss(b)
            loss.sum().backward()
    return step


def per_box_scoring(graph, calib, iou: float, target: str):
    """The scoring loop before batching (one `Explainer.explain` per box and target kind, each its own forward and
    backward), kept here only as the baseline of the speed-up."""
    import relprop
    from pruning.criteria import DetDSHAP

    kinds = DetDSHAP.TARGETS[target]

    def run():
        ex = relprop.Explainer(graph.with_folded_batchnorm())
        stats: dict[str, torch.Tensor] = {}
        for image, boxes, classes in calib.images():
            for box, cls in zip(boxes.tolist(), classes.tolist()):
                for kind in kinds:
                    try:
                        e = ex.explain(image, box, target=kind, iou=iou, cls=int(cls))
                    except relprop.NoMatchError:
                        continue
                    rel = {p: torch.as_tensor(r, dtype=torch.float64).abs() for p, r in e.channels.items()}
                    total = sum(float(r.sum()) for r in rel.values()) if len(kinds) > 1 else 1.0
                    for p, r in rel.items():
                        stats[p] = stats[p] + r / total if p in stats else r / total
        return stats
    return run


def measure(args: argparse.Namespace) -> dict:
    """Scoring (each of `args.configs`: DetDSHAP's (batch, chunk), default its own) and training, interleaved."""
    import fxgraph
    from pruning.criteria import DetDSHAP

    device = torch.device(args.device)
    model = load_model(args.model)
    graph = fxgraph.trace(model, args.imgsz, device=device)
    calib = calibration(graph, args.imgsz, args.batch, args.batches, args.boxes)
    configs = [tuple(c) for c in (getattr(args, "configs", None) or [(8, 1)])]
    criteria = {c: DetDSHAP(calib, boxes="labels", iou=args.iou, target=args.target, batch=c[0], chunk=c[1])
                for c in configs}
    name = lambda c: "scoring" if c == configs[0] else f"scoring b{c[0]} c{c[1]}"  # noqa: E731
    fns = {name(c): (lambda crit=crit: crit.filter_stats(graph)) for c, crit in criteria.items()}
    fns["training"] = training_step(model, calib, device)
    if args.per_box:
        fns["per_box"] = per_box_scoring(graph, calib, args.iou, args.target)
    times = interleaved(fns, args.repeats, device)  # one warm-up call each, then interleaved rounds
    n = calib.n_images
    summary = {key: {"min_s": min(ts), "median_s": statistics.median(ts), "times_s": ts,
                     "images_per_s_best": n / min(ts), "images_per_s_median": n / statistics.median(ts)}
               for key, ts in times.items()}
    criterion = criteria[configs[0]]
    per_image = criterion.explained / n
    return {
        "model": args.model, "imgsz": args.imgsz, "batch": args.batch, "batches": args.batches, "images": n,
        "boxes_explained": criterion.explained, "boxes_skipped": criterion.skipped, "target": args.target,
        "device": str(device), **{k: v for k, v in summary.items() if not k.startswith("scoring b")},
        "configs": [{"batch": c[0], "chunk": c[1], "boxes_explained": criteria[c].explained,
                     "boxes_per_s_best": per_image * summary[name(c)]["images_per_s_best"],
                     "boxes_per_s_median": per_image * summary[name(c)]["images_per_s_median"],
                     **{k: v for k, v in summary[name(c)].items() if k != "times_s"}} for c in configs],
        "ratio_best": summary["scoring"]["images_per_s_best"] / summary["training"]["images_per_s_best"],
        "ratio_median": summary["scoring"]["images_per_s_median"] / summary["training"]["images_per_s_median"],
        **({"speedup_over_per_box_best": summary["per_box"]["min_s"] / summary["scoring"]["min_s"],
            "speedup_over_per_box_median": summary["per_box"]["median_s"] / summary["scoring"]["median_s"]}
           if args.per_box else {}),
    }


def markdown(r: dict, meta: dict) -> str:
    s, t = r["scoring"], r["training"]
    return "\n".join([
        "# DetDSHAP scoring throughput vs training (issue 12)",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; device {r['device']}; "
        f"min and median of {meta['repeats']} interleaved runs after a warm-up.  Command: `{meta['command']}`",
        "",
        "| model | imgsz | images | boxes | target | scoring img/s (min / median) | training img/s (min / median) "
        "| scoring ÷ training (min / median) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['model']} | {r['imgsz']} | {r['images']} (batch {r['batch']}) | {r['boxes_explained']} | {r['target']} | "
        f"{s['images_per_s_best']:.2f} / {s['images_per_s_median']:.2f} | "
        f"{t['images_per_s_best']:.2f} / {t['images_per_s_median']:.2f} | "
        f"{r['ratio_best']:.3f} / {r['ratio_median']:.3f} |",
        *(["", "| DetDSHAP batch | chunk | boxes | boxes/s (min / median) |", "|---|---|---|---|",
           *[f"| {c['batch']} | {c['chunk']} | {c['boxes_explained']} | {c['boxes_per_s_best']:.0f} / "
             f"{c['boxes_per_s_median']:.0f} |" for c in r.get("configs", [])]] if len(r.get("configs", [])) > 1 else []),
        *([f"Per-box scoring (the loop before batching: one explain per box and kind): "
           f"{r['per_box']['images_per_s_best']:.2f} / {r['per_box']['images_per_s_median']:.2f} img/s; batched "
           f"scoring is {r['speedup_over_per_box_best']:.2f}× / {r['speedup_over_per_box_median']:.2f}× faster "
           "(min / median)."] if "per_box" in r else []),
        "",
        "scoring: `DetDSHAP(...).filter_stats(graph)` end to end (BatchNorm folding and rule rewrite included). "
        "training: ultralytics `model.loss(batch)` + `loss.sum().backward()` per batch, no optimiser step. "
        "Goal (issue 12): scoring ≥ 1/3 of training throughput on the same device.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="yolov8n.yaml", help="ultralytics yaml (random weights) or weights path")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--batches", type=int, default=1)
    p.add_argument("--boxes", type=int, default=3, help="labels per image (the model's most confident candidates)")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--target", default="all", choices=("class", "box", "all"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--configs", nargs="+", default=None, metavar="BATCH:CHUNK",
                   help="DetDSHAP (batch, chunk) settings timed side by side, the first reported as `scoring` "
                        "(default: DetDSHAP's own, 8:1)")
    p.add_argument("--per-box", action="store_true", help="also time the per-box loop scoring used before batching")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--machine", default=platform.platform(), help="how the machine is named in the results")
    p.add_argument("--out", default=str(RESULTS / "scoring_throughput"), help="output stem (.json and .md)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    if args.configs:
        args.configs = [tuple(int(v) for v in c.split(":")) for c in args.configs]
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    meta = {"machine": args.machine, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "command": "python benchmarks/scoring_throughput.py " + " ".join(argv or sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "result": result}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result, meta))
    print(markdown(result, meta))


if __name__ == "__main__":
    main()
