"""Before/after timing of a change to relprop (its rules, engine or explainer), in one run: explaining one box with
the `relprop` package of a git commit (`--base`) against the working tree's, interleaved with a plain forward and a
plain gradient.

    python benchmarks/rules_before_after.py --base HEAD~1 [--models yolov8n embedded] [--imgsz 640] [--repeats 7]

The base's `relprop/` is extracted from git into a temporary folder and imported as its own package (`relprop_base`;
relprop imports itself only relatively), so both versions run side by side on the same model, with today's `fxgraph`.
Timed, interleaved (min and median over the rounds): ultralytics's graph forward; a gradient (forward and backward of
the same graph for the box's target weights: the floor); `Explainer.explain(image, box)` of each version on the
decoded image, reference cached; and each version's relevance pass alone (`engine.forward(x, refs).backward(w)`, the
figure the speed goals read).  Counts the ATen ops of each (TorchDispatchMode) and the largest heatmap difference (the
two must explain the same thing).  Writes one JSON (the command, base, threads and load recorded).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import relprop  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from bench_timing import interleaved  # noqa: E402
from explain_speed import RANDOM, model_and_image  # noqa: E402
from random_models import best_candidate_boxes  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def base_package(commit: str) -> types.ModuleType:
    """`relprop` as it was at `commit`, imported as the package `relprop_base` from a temporary folder (nothing is
    written into the repository)."""
    archive = subprocess.run(["git", "archive", commit, "relprop"], cwd=ROOT, check=True, capture_output=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="relprop_base_"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "relprop").rename(folder / "relprop_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("relprop_base")


class OpCount(TorchDispatchMode):
    """Counts the ATen ops dispatched."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    with OpCount() as c:
        fn()
    return c.n


def measure(name: str, imgsz: int, repeats: int, base: types.ModuleType) -> dict:
    model, path = model_and_image(name)
    new_ex = relprop.Explainer(model, imgsz)
    old_ex = base.Explainer(model, imgsz)
    g = new_ex.graph
    image = read_image(path)
    lb = Letterbox.fit(image.shape[:2], g.imgsz)
    x = to_input(image, lb, g.dtype, g.device)
    if name in RANDOM:  # random weights detect nothing: their best candidate as a box
        box, options = best_candidate_boxes(g, image, 1)[0][0], {"iou": 0.5}
    else:
        found = new_ex.explain(image)
        box, options = found[0].box, {"cls": found[0].cls}
    with torch.no_grad():
        pred = new_ex.engine(x)[0][0]
    target = new_ex.match(pred, lb, box, options.get("cls"), relprop.ExplainOptions(iou=options.get("iou", 0.7)))
    weights = target.weights(new_ex.layout, pred.shape[0], pred.shape[1], pred.dtype, pred.device)
    refs = {"old": old_ex.engine.reference(torch.zeros_like(x)), "new": new_ex.engine.reference(torch.zeros_like(x))}
    engines = {"old": old_ex.engine, "new": new_ex.engine}

    def forward():
        with torch.no_grad():
            g.module(x)

    def gradient():  # the floor: forward and backward of the same graph for the box's target weights
        xg = x.detach().requires_grad_(True)
        y = g.module(xg)
        y = y[0] if isinstance(y, (tuple, list)) else y
        torch.autograd.grad((y.flatten(1) @ weights.flatten()).sum(), xg)

    def explain(ex):
        return lambda: ex.explain(image, box, **options)

    def relevance(side):
        return lambda: engines[side].forward(x, refs[side]).backward(weights)

    calls = {"forward": forward, "gradient": gradient, "old": explain(old_ex), "new": explain(new_ex),
             "old_pass": relevance("old"), "new_pass": relevance("new")}
    a, b = calls["old"](), calls["new"]()  # each Explainer caches its reference here
    ops = {k: count_ops(fn) for k, fn in calls.items()}
    t = interleaved(calls, repeats, rotate=True)
    mins, medians = {k: min(v) for k, v in t.items()}, {k: statistics.median(v) for k, v in t.items()}
    ratio = lambda a, b: {"min": mins[a] / mins[b], "median": medians[a] / medians[b]}  # noqa: E731
    return {"model": name, "imgsz": imgsz, "repeats": repeats,
            "heatmap_max_abs_diff": float(abs(a.heatmap - b.heatmap).max()), "heatmap_max_abs": float(abs(a.heatmap).max()),
            "seconds_min": mins, "seconds_median": medians,
            "new_over_old": ratio("new", "old"), "pass_new_over_old": ratio("new_pass", "old_pass"),
            "over_gradient": {k: ratio(k, "gradient") for k in ("old", "new", "old_pass", "new_pass")},
            "over_forward": {k: ratio(k, "forward") for k in ("old", "new", "old_pass", "new_pass")},
            "aten_ops": ops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git commit whose relprop/ is the 'before'")
    ap.add_argument("--models", nargs="+", default=["yolov8n", "embedded"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[640])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "rules_before_after.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = base_package(args.base)
    load = [os.getloadavg()[0]]
    rows = []
    for name in args.models:
        for imgsz in args.imgsz:
            row = measure(name, imgsz, args.repeats, base)
            rows.append(row)
            g, f, o = row["over_gradient"], row["over_forward"], row["aten_ops"]
            print(f"{name} {imgsz}: pass new/old {row['pass_new_over_old']['min']:.3f} (min) "
                  f"{row['pass_new_over_old']['median']:.3f} (median); pass × gradient {g['old_pass']['min']:.2f} -> "
                  f"{g['new_pass']['min']:.2f} (median {g['old_pass']['median']:.2f} -> {g['new_pass']['median']:.2f}); "
                  f"explain × gradient {g['old']['min']:.2f} -> {g['new']['min']:.2f}, × forward {f['old']['min']:.2f} "
                  f"-> {f['new']['min']:.2f}; ATen ops pass {o['old_pass']} -> {o['new_pass']}, explain {o['old']} -> "
                  f"{o['new']} (gradient {o['gradient']}, forward {o['forward']}); heatmaps differ by "
                  f"{row['heatmap_max_abs_diff']:.3g} (max |heatmap| {row['heatmap_max_abs']:.3g})")
    load.append(os.getloadavg()[0])
    base_id = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/rules_before_after.py " + " ".join(argv or sys.argv[1:]),
                                    "base": base_id.stdout.strip(), "threads": args.threads,
                                    "load_before_after": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
