"""Before/after timing of a change to the relevance rules, in one run: explaining one box with the rule Functions of
a git commit (`--base`) against those of the working tree, interleaved with a plain forward.

    python benchmarks/rules_before_after.py --base HEAD~1 [--models yolov8n embedded] [--imgsz 640] [--repeats 7]

Both sides run on the same traced graph: the base's rule modules (`relprop/rules/*.py`) are loaded from git as separate
modules and their autograd Functions' forward/backward are swapped in before each of its calls.  So only the rule arithmetic
differs, and a slow spell of a shared machine hits both alike.  Prints the ratio new/old (min and median over the
rounds), each side over the forward, and the largest heatmap difference (the two must explain the same thing).
Only the Functions are swapped, not the rules that call them: a base whose Functions take other arguments than
today's rules pass (before 74cd451, RescaleFn took a derivative function where it now may take f'(x0)) cannot be
compared this way, nor a base from before the rules became a package (d63b78c).
Also counts the ATen ops one explained box dispatches on each side (TorchDispatchMode), against a plain gradient
(forward and backward of the same graph for the same target weights).
Writes benchmarks/results/rules_before_after.json (one entry per model and size, the command and load recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import types
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import relprop  # noqa: E402
import relprop.rules  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from bench_timing import interleaved  # noqa: E402
from explain_speed import RANDOM, model_and_image  # noqa: E402
from random_models import best_candidate_boxes  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def rule_modules(commit: str | None) -> list[types.ModuleType]:
    """The modules of relprop/rules as they were at `commit` (each run as its own module, nothing written to disk;
    relative imports resolve to today's package), or today's modules for None."""
    names = sorted(p.stem for p in (ROOT / "relprop" / "rules").glob("*.py") if p.stem != "__init__")
    if commit is None:
        return [sys.modules[f"relprop.rules.{n}"] for n in names]
    out = []
    for name in names:
        text = subprocess.run(["git", "show", f"{commit}:relprop/rules/{name}.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        module = types.ModuleType(f"base_rules_{name}")
        module.__package__ = "relprop.rules"
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(text, f"{commit}:relprop/rules/{name}.py", "exec"), module.__dict__)
        out.append(module)
    return out


def functions(modules: list[types.ModuleType]) -> dict[str, type]:
    return {n: v for m in modules for n, v in vars(m).items() if isinstance(v, type)
            and issubclass(v, torch.autograd.Function) and v is not torch.autograd.Function and v.__module__ == m.__name__}


def rule_tables(base_modules: list[types.ModuleType]) -> tuple[dict, dict]:
    """(base, current) forward/backward of every autograd Function both versions define."""
    old, new = functions(base_modules), functions(rule_modules(None))
    names = sorted(set(old) & set(new))
    pick = lambda fns: {n: (vars(fns[n])["forward"], vars(fns[n])["backward"]) for n in names}  # noqa: E731
    return pick(old), pick(new)


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


CURRENT = functions(rule_modules(None))


def use(table: dict) -> None:
    for name, (forward, backward) in table.items():
        cls = CURRENT[name]
        cls.forward, cls.backward = forward, backward


def measure(name: str, imgsz: int, repeats: int, old: dict, new: dict) -> dict:
    model, path = model_and_image(name)
    ex = relprop.Explainer(model, imgsz)
    g = ex.graph
    image = read_image(path)
    x = to_input(image, Letterbox.fit(image.shape[:2], g.imgsz), g.dtype, g.device)
    if name in RANDOM:  # random weights detect nothing: their best candidate as a box
        box, options = best_candidate_boxes(g, image, 1)[0][0], {"iou": 0.5}
    else:
        found = ex.explain(path)
        box, options = found[0].box, {"cls": found[0].cls}

    def explain(table):
        use(table)
        return ex.explain(path, box, **options)

    def forward():
        with torch.no_grad():
            g.module(x)

    def gradient():  # the floor: forward and backward of the same graph for the box's target weights
        xg = x.detach().requires_grad_(True)
        y = g.module(xg)
        y = y[0] if isinstance(y, (tuple, list)) else y
        torch.autograd.grad((y.flatten(1) @ weights.flatten()).sum(), xg)

    a, b = explain(old), explain(new)
    with torch.no_grad():
        pred = ex.engine(x)[0][0]
    target = ex.match(pred, Letterbox.fit(image.shape[:2], g.imgsz), b.box, b.cls,
                      relprop.ExplainOptions(iou=options.get("iou", 0.5)))
    weights = target.weights(pred.shape[0], pred.shape[1], pred.dtype, pred.device)
    gradient()
    ops = {"old": count_ops(lambda: explain(old)), "new": count_ops(lambda: explain(new)), "gradient": count_ops(gradient)}
    diff = float(abs(a.heatmap - b.heatmap).max())
    t = interleaved({"forward": forward, "gradient": gradient, "old": lambda: explain(old), "new": lambda: explain(new)},
                    repeats)
    use(new)
    mins = {k: min(v) for k, v in t.items()}
    return {"model": name, "imgsz": imgsz, "repeats": repeats, "heatmap_max_abs_diff": diff,
            "heatmap_max_abs": float(abs(a.heatmap).max()),
            "seconds_min": mins, "seconds_median": {k: statistics.median(v) for k, v in t.items()},
            "new_over_old_min": mins["new"] / mins["old"],
            "new_over_old_median": statistics.median(t["new"]) / statistics.median(t["old"]),
            "old_over_forward": mins["old"] / mins["forward"], "new_over_forward": mins["new"] / mins["forward"],
            "old_over_gradient": mins["old"] / mins["gradient"], "new_over_gradient": mins["new"] / mins["gradient"],
            "aten_ops_per_box": ops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git commit whose relprop/rules/*.py are the 'before'")
    ap.add_argument("--models", nargs="+", default=["yolov8n", "embedded"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[640])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "rules_before_after.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    old, new = rule_tables(rule_modules(args.base))
    load = [os.getloadavg()[0]]
    rows = []
    for name in args.models:
        for imgsz in args.imgsz:
            row = measure(name, imgsz, args.repeats, old, new)
            rows.append(row)
            print(f"{name} {imgsz}: new/old {row['new_over_old_min']:.3f} (min) {row['new_over_old_median']:.3f} "
                  f"(median); × forward {row['old_over_forward']:.2f} -> {row['new_over_forward']:.2f}; × gradient "
                  f"{row['old_over_gradient']:.2f} -> {row['new_over_gradient']:.2f}; ATen ops per box "
                  f"{row['aten_ops_per_box']['old']} -> {row['aten_ops_per_box']['new']} "
                  f"(gradient {row['aten_ops_per_box']['gradient']}); "
                  f"heatmaps differ by {row['heatmap_max_abs_diff']:.3g} (max |heatmap| {row['heatmap_max_abs']:.3g})")
    load.append(os.getloadavg()[0])
    base = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=ROOT, capture_output=True, text=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/rules_before_after.py " + " ".join(argv or sys.argv[1:]),
                                    "base": base.stdout.strip(), "threads": args.threads, "load_before_after": load,
                                    "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
