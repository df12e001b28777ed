"""The GPU suite: every GPU check and figure in one prepared run, meant to finish in under 8 minutes on one GPU.

    python benchmarks/gpu_suite.py [--device cuda] [--out benchmarks/results/gpu]
    python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/suite      # CI: the same checks, tiny sizes

Sections, each a check that passes or fails:

* tests      — the `cuda`-marked tests (pytest -m cuda; on a CPU they skip, which passes);
* speed      — explain_speed rows: eager, compiled and CUDA-graph relevance passes for YOLOv8s (embedded), YOLO11s
               (uitag) and YOLO26n (random) at 640 and 1280 px; fails on a non-finite time or a compiled mode that
               fell back to eager.  Rows not started within `--speed-budget` seconds are skipped and listed;
* scoring    — scoring_throughput: batched DetDSHAP scoring against a training step on the device;
* agreement  — the same boxes explained on the CPU and on the device in float64: relevance within 1e-9 relative,
               completeness (|delta|) within 1e-8 of the score.

Writes `gpu_suite.json` and `gpu_suite.md` to `--out`, naming the device, and exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

FULL = {"models": ["embedded", "yolo11s-ui", "yolo26n"], "imgsz": [640, 1280], "modes": ["eager", "compiled", "cudagraph"],
        "repeats": 5, "scoring": {"model": None, "imgsz": 640, "batch": 16, "batches": 2, "boxes": 4, "iou": 0.5},
        "agreement_imgsz": 320}
TINY = {"models": ["yolov8n"], "imgsz": [64], "modes": ["eager"], "repeats": 1,
        "scoring": {"model": "yolov8n.yaml", "imgsz": 64, "batch": 2, "batches": 1, "boxes": 1, "iou": 0.01},
        "agreement_imgsz": 160}


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# -- the checks: pure functions of a section's result, so that a self-test can feed them wrong results -------------

def check_tests(r: dict) -> list[str]:
    return [] if r["returncode"] in (0, 5) else [f"cuda tests failed (pytest exit {r['returncode']})"]


def check_speed(r: dict) -> list[str]:
    bad = []
    if not r["rows"] and not r["skipped"]:
        bad.append("no explain_speed row was measured")
    for row in r["rows"]:
        label = f"{row['model']} {row['imgsz']} {row['mode']}"
        for key in ("forward_s", "forward_grad_s", "explain_one_s"):
            if not (isinstance(row.get(key), float) and math.isfinite(row[key]) and row[key] > 0):
                bad.append(f"{label}: {key} = {row.get(key)!r}")
        if row["mode"] != "eager" and row.get("compile_failed"):
            bad.append(f"{label}: compiling fell back to eager ({row['compile_failed']})")
    return bad


def check_scoring(r: dict) -> list[str]:
    bad = []
    if not r.get("boxes_explained"):
        bad.append("scoring explained no box")
    for key in ("ratio_best", "ratio_median"):
        if not (isinstance(r.get(key), float) and math.isfinite(r[key]) and r[key] > 0):
            bad.append(f"scoring {key} = {r.get(key)!r}")
    return bad


def check_agreement(r: dict) -> list[str]:
    bad = []
    if not r["boxes"]:
        bad.append("agreement: no box explained")
    for b in r["boxes"]:
        if not b["relevance_rel_diff"] <= 1e-9:
            bad.append(f"agreement box {b['index']}: relevance differs by {b['relevance_rel_diff']:.3g} relative")
        if not b["score_rel_diff"] <= 1e-9:
            bad.append(f"agreement box {b['index']}: score differs by {b['score_rel_diff']:.3g} relative")
        if not b["max_abs_delta"] <= 1e-8 * max(1.0, b["abs_score"]):
            bad.append(f"agreement box {b['index']}: completeness delta {b['max_abs_delta']:.3g}")
    return bad


CHECKS: dict[str, Callable[[dict], list[str]]] = {
    "tests": check_tests, "speed": check_speed, "scoring": check_scoring, "agreement": check_agreement,
}


# -- the sections --------------------------------------------------------------------------------------------------

def run_tests(device: str, cfg: dict) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "tests/test_compiled.py",
           "-p", "no:cacheprovider"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    return {"command": " ".join(cmd[1:]), "returncode": p.returncode, "tail": p.stdout[-2000:]}


def run_speed(device: str, cfg: dict, budget: float) -> dict:
    import explain_speed

    rows, skipped, start = [], [], time.perf_counter()
    for imgsz in cfg["imgsz"]:
        for name in cfg["models"]:
            for mode in cfg["modes"]:
                label = f"{name} {imgsz} {mode}"
                if mode == "cudagraph" and torch.device(device).type != "cuda":
                    skipped.append(f"{label} (CUDA graphs need CUDA)")
                    continue
                if time.perf_counter() - start > budget:
                    skipped.append(f"{label} (over the {budget:.0f} s budget)")
                    continue
                model, image = explain_speed.model_and_image(name)
                try:
                    rows.append(explain_speed.measure(name, model, imgsz, cfg["repeats"], 4, device, image,
                                                      0.25, mode))
                except explain_speed.NoDetection as e:
                    skipped.append(f"{label} ({e})")
                print(f"speed {label}: done at {time.perf_counter() - start:.0f} s", flush=True)
    return {"rows": rows, "skipped": skipped}


def run_scoring(device: str, cfg: dict) -> dict:
    import scoring_throughput

    s = cfg["scoring"]
    model = s["model"] or str(__import__("fxgraph").embedded_weights())
    args = SimpleNamespace(model=model, imgsz=s["imgsz"], batch=s["batch"], batches=s["batches"], boxes=s["boxes"],
                           iou=s["iou"], target="all", repeats=cfg["repeats"], device=device, per_box=False)
    r = scoring_throughput.measure(args)
    for part in ("scoring", "training"):
        r[part].pop("times_s", None)
    return r


def run_agreement(device: str, cfg: dict) -> dict:
    """The same boxes on the CPU and on `device`, float64, black reference."""
    import copy

    import fxgraph
    import relprop
    from ultralytics.utils import ASSETS

    model = fxgraph.load_ultralytics(None)
    image = str(ASSETS / "bus.jpg")
    out = {}
    for dev in ("cpu", device):
        ex = relprop.Explainer(copy.deepcopy(model), cfg["agreement_imgsz"], device=dev, dtype=torch.float64)
        out[dev] = ex.explain(image, iou=0.5, max_det=3)
    boxes = []
    for a, b in zip(out["cpu"], out[device]):
        ra, rb = a.input_relevance.numpy(), b.input_relevance.numpy()
        boxes.append({"index": a.index, "relevance_rel_diff": float(np.linalg.norm(ra - rb) / max(np.linalg.norm(ra), 1e-300)),
                      "score_rel_diff": abs(a.score - b.score) / max(abs(a.score), 1e-300),
                      "max_abs_delta": max(abs(a.delta), abs(b.delta)), "abs_score": abs(a.score)})
    if len(out["cpu"]) != len(out[device]):
        boxes.append({"index": -1, "relevance_rel_diff": math.inf, "score_rel_diff": math.inf,
                      "max_abs_delta": math.inf, "abs_score": 0.0})
    return {"imgsz": cfg["agreement_imgsz"], "boxes": boxes}


# -- report --------------------------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    lines = [f"# GPU suite on {report['device_name']}", "",
             f"`{report['command']}`; torch {report['torch']}; {report['seconds']:.0f} s in all.", "",
             "| check | result | failures |", "|---|---|---|"]
    for name, fails in report["failures"].items():
        lines.append(f"| {name} | {'FAIL' if fails else 'pass'} | {'; '.join(fails) or '-'} |")
    rows = report["sections"].get("speed", {}).get("rows", [])
    if rows:
        lines += ["", "| model | imgsz | mode | forward ms | forward+grad ms | one box ms | one box ÷ forward "
                  "| one box ÷ gradient | per box (all) ms |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['model']} | {r['imgsz']} | {r['mode']} | {1e3 * r['forward_s']:.1f} | "
                         f"{1e3 * r['forward_grad_s']:.1f} | {1e3 * r['explain_one_s']:.1f} | "
                         f"{r['ratio_one_to_forward']:.2f} | {r['explain_one_s'] / r['forward_grad_s']:.2f} | "
                         f"{1e3 * r['per_box_all_s']:.1f} |")
    skipped = report["sections"].get("speed", {}).get("skipped", [])
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    sc = report["sections"].get("scoring")
    if sc and "scoring" in sc:
        lines += ["", f"Scoring ({sc['model']}, {sc['imgsz']} px, {sc['images']} images, {sc['boxes_explained']} "
                  f"boxes): {sc['scoring']['images_per_s_best']:.2f} img/s against training "
                  f"{sc['training']['images_per_s_best']:.2f} img/s (ratio {sc['ratio_best']:.3f} min, "
                  f"{sc['ratio_median']:.3f} median)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and one model (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    ap.add_argument("--only", nargs="+", choices=sorted(CHECKS), default=sorted(CHECKS))
    ap.add_argument("--speed-budget", type=float, default=300.0, help="seconds after which no speed row starts")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device is available here", file=sys.stderr)
        return 2
    cfg = TINY if args.tiny else FULL
    start = time.perf_counter()
    sections: dict[str, Any] = {}
    failures: dict[str, list[str]] = {}
    runners = {"tests": lambda: run_tests(args.device, cfg), "speed": lambda: run_speed(args.device, cfg, args.speed_budget),
               "scoring": lambda: run_scoring(args.device, cfg), "agreement": lambda: run_agreement(args.device, cfg)}
    for name in ("tests", "speed", "scoring", "agreement"):
        if name not in args.only:
            continue
        try:
            sections[name] = runners[name]()
            failures[name] = CHECKS[name](sections[name])
        except Exception as e:  # noqa: BLE001 - a crashed section is a failed check, and the others still run
            sections[name] = {"error": f"{type(e).__name__}: {e}"}
            failures[name] = [f"{name} crashed: {type(e).__name__}: {e}"]
        print(f"{name}: {'FAIL ' + '; '.join(failures[name]) if failures[name] else 'pass'}", flush=True)
    report = {"device": args.device, "device_name": device_name(args.device), "torch": torch.__version__,
              "tiny": args.tiny, "command": "python benchmarks/gpu_suite.py " + " ".join(argv or sys.argv[1:]),
              "seconds": time.perf_counter() - start, "sections": sections, "failures": failures}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_suite.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if any(failures.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
