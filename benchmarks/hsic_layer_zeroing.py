"""Within-layer signal of a criterion: zero 25% of ONE channel group at a time, chosen by the criterion (lowest
scores) or at random, and measure how much the model's output changes on held-out images (lower = better choice).

    python benchmarks/hsic_layer_zeroing.py [--model yolov8n.yaml] [--imgsz 128] [--calib 32] [--val 16]

Model: the embedded YOLOv8s by default (or a yaml: random weights, BN recalibrated); data: the synthetic shapes
(calibration from train, evaluation on val).  Output change = mean over images of ||Δ boxes|| / ||boxes|| +
||Δ class scores|| / ||class scores|| of the decoded prediction tensor.  A criterion wins a group when its change is
below the median of `--draws` random choices.  Prints one line per criterion.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import random_model, zero_units  # noqa: E402

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from pruning.criteria import HSIC, Magnitude, Taylor  # noqa: E402
from pruning.criteria.calibration import load_calibration  # noqa: E402
from pruning.job.synthetic import ShapesConfig, make_shapes_dataset  # noqa: E402


def change(module, base, images) -> float:
    with torch.no_grad():
        out = module(images)[0]
    rel = lambda a, b: float((a - b).norm(dim=(1, 2)).div(b.norm(dim=(1, 2)).clamp_min(1e-12)).mean())
    return rel(out[:, :4], base[:, :4]) + rel(out[:, 4:], base[:, 4:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--taylor", action="store_true", help="also Taylor (needs the data's classes: use --model)")
    a = ap.parse_args()
    model = random_model(a.model) if a.model else fxgraph.load_ultralytics(None)
    graph = fxgraph.trace(model, a.imgsz)
    coupling = pruning.analyze(graph)
    root = Path(tempfile.mkdtemp())
    data = make_shapes_dataset(root, ShapesConfig(n_train=a.calib, n_val=a.val, imgsz=a.imgsz))
    calib = load_calibration(data, graph.task, a.imgsz, a.calib, batch=8, stride=int(max(graph.stride)))
    val = load_calibration(data, graph.task, a.imgsz, a.val, split="val", batch=a.val, stride=int(max(graph.stride)))
    images = val.batches[0]["img"].float() / 255
    with torch.no_grad():
        base = graph.module(images)[0]
    criteria = {"hsic": HSIC(calib), "l1": Magnitude(1)}
    if a.taylor:
        criteria["taylor"] = Taylor(calib)
    scores = {name: c(graph, coupling) for name, c in criteria.items()}
    module = copy.deepcopy(graph.module)
    state = copy.deepcopy(module.state_dict())
    gen = torch.Generator().manual_seed(0)
    wins = {name: 0 for name in scores}
    ratios: dict[str, list[float]] = {name: [] for name in scores}
    groups = [g for g in coupling.prunable() if len(g) >= 4]
    for group in groups:
        k = int(a.fraction * len(group))

        def trial(units) -> float:
            zero_units([module], coupling, {group.name: tuple(int(u) for u in units)})
            value = change(module, base, images)
            module.load_state_dict(state)
            return value

        rand = sorted(trial(torch.randperm(len(group), generator=gen)[:k]) for _ in range(a.draws))
        median = rand[len(rand) // 2]
        mean = sum(rand) / len(rand)
        for name, s in scores.items():
            value = trial(torch.argsort(s[group.name], stable=True)[:k])
            wins[name] += value < median
            ratios[name].append(value / max(mean, 1e-12))
    model_name = a.model or "embedded YOLOv8s"
    print(f"{model_name}, {a.imgsz} px, {len(groups)} groups, zero {a.fraction:.0%} of one group at a time, "
          f"{a.calib} calibration / {a.val} held-out synthetic images, {a.draws} random draws per group")
    for name in scores:
        r = torch.tensor(ratios[name])
        print(f"{name:8s} beats the random median in {wins[name]}/{len(groups)} groups; output change / random mean: "
              f"median {r.median():.2f}, mean {r.mean():.2f}")


if __name__ == "__main__":
    main()
