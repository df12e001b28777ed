"""Before/after timing of a change to the relevance rules, in one run: explaining one box with the rule Functions of
a git commit (`--base`) against those of the working tree, interleaved with a plain forward.

    python benchmarks/rules_before_after.py --base HEAD~1 [--models yolov8n embedded] [--imgsz 640] [--repeats 7]

Both sides run on the same traced graph: the base's `relprop/functions.py` is loaded from git as a separate module
and its autograd Functions' forward/backward are swapped in before each of its calls.  So only the rule arithmetic
differs, and a slow spell of a shared machine hits both alike.  Prints the ratio new/old (min and median over the
rounds), each side over the forward, and the largest heatmap difference (the two must explain the same thing).
Only the Functions are swapped, not the rules that call them: a base whose Functions take other arguments than
today's rules pass (before 74cd451, RescaleFn took a derivative function where it now may take f'(x0)) cannot be
compared this way.
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
import relprop.functions as current  # noqa: E402
from bench_timing import interleaved  # noqa: E402
from explain_speed import RANDOM, model_and_image  # noqa: E402
from random_models import best_candidate_boxes  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def functions_at(commit: str) -> types.ModuleType:
    """relprop/functions.py as it was at `commit`, run as its own module (nothing written to disk)."""
    text = subprocess.run(["git", "show", f"{commit}:relprop/functions.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    module = types.ModuleType("base_functions")
    exec(compile(text, f"{commit}:relprop/functions.py", "exec"), module.__dict__)
    return module


def rule_tables(base) -> tuple[dict, dict]:
    """(base, current) forward/backward of every autograd Function both versions define."""
    names = [n for n, v in vars(current).items() if isinstance(v, type) and issubclass(v, torch.autograd.Function)
             and v is not torch.autograd.Function and isinstance(getattr(base, n, None), type)]
    pick = lambda mod: {n: (vars(getattr(mod, n))["forward"], vars(getattr(mod, n))["backward"]) for n in names}  # noqa: E731
    return pick(base), pick(current)


def use(table: dict) -> None:
    for name, (forward, backward) in table.items():
        cls = getattr(current, name)
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

    a, b = explain(old), explain(new)
    diff = float(abs(a.heatmap - b.heatmap).max())
    t = interleaved({"forward": forward, "old": lambda: explain(old), "new": lambda: explain(new)}, repeats)
    use(new)
    mins = {k: min(v) for k, v in t.items()}
    return {"model": name, "imgsz": imgsz, "repeats": repeats, "heatmap_max_abs_diff": diff,
            "heatmap_max_abs": float(abs(a.heatmap).max()),
            "seconds_min": mins, "seconds_median": {k: statistics.median(v) for k, v in t.items()},
            "new_over_old_min": mins["new"] / mins["old"],
            "new_over_old_median": statistics.median(t["new"]) / statistics.median(t["old"]),
            "old_over_forward": mins["old"] / mins["forward"], "new_over_forward": mins["new"] / mins["forward"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git commit whose relprop/functions.py is the 'before'")
    ap.add_argument("--models", nargs="+", default=["yolov8n", "embedded"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[640])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "rules_before_after.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    old, new = rule_tables(functions_at(args.base))
    load = [os.getloadavg()[0]]
    rows = []
    for name in args.models:
        for imgsz in args.imgsz:
            row = measure(name, imgsz, args.repeats, old, new)
            rows.append(row)
            print(f"{name} {imgsz}: new/old {row['new_over_old_min']:.3f} (min) {row['new_over_old_median']:.3f} "
                  f"(median); × forward {row['old_over_forward']:.2f} -> {row['new_over_forward']:.2f}; "
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
