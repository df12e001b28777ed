"""The GPU suite: every GPU check and figure in one prepared run, meant to finish in under 8 minutes on one GPU.

    python benchmarks/gpu_suite.py [--device cuda] [--out benchmarks/results/gpu]
    python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/suite      # CI: the same checks, tiny sizes

Sections, each a check that passes or fails:

* tests      — the `cuda`-marked tests (pytest -m cuda; on a CPU they skip, which passes);
* speed      — explain_speed rows: eager, traced-graph, compiled and CUDA-graph relevance passes for YOLOv8s
               (embedded), YOLO11s (uitag) and YOLO26n (random) at 640 and 1280 px, the modes that need no compiler
               first; fails on a non-finite time or a compiled mode that fell back to eager.  Rows not started within
               `--speed-budget` seconds are skipped and listed;
* scoring    — scoring_throughput: batched DetDSHAP scoring against a training step on the device, for several
               DetDSHAP (batch, chunk) settings side by side (the first, DetDSHAP's default, is the checked figure);
* agreement  — the same boxes explained on the CPU and on the device in float64: relevance within 1e-9 relative,
               completeness (|delta|) within 1e-8 of the score;
* profile    — where one box's time goes: decoding the image, explaining from a path and from an array, and the
               device's kernel time against the call's wall time under torch.profiler (eager and traced graphs);
* prune      — the width / depth / both table of pruning's latency (issue 29) on the device: the plans of
               `prune_depth_latency.py --plans-out` (made once on a CPU: `--plans`), cut here, timed in torch at batch
               1 and 640 px in float16 on CUDA (float32 on a CPU), CUDA-synchronised, interleaved, with kernels
               launched one by one (eager) and, on CUDA, replayed from one CUDA graph (no launch cost, as a deployment
               runtime that captures); fails on a non-finite time.  With --tiny the plans are made here.

Sections run cheapest and most wanted first; one not started before `--deadline` seconds is skipped and listed.
Writes `gpu_suite.json` and `gpu_suite.md` to `--out` after every section (a run cut short keeps what it measured),
naming the device, and exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
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

FULL = {"models": ["embedded", "yolo11s-ui", "yolo26n"], "imgsz": [640, 1280],
        "modes": ["eager", "graph", "compiled", "cudagraph"], "repeats": 5,
        "conf": {"yolo11s-ui": 0.05},  # uitag's YOLO11s scores its screenshot's elements low
        "scoring": {"model": None, "imgsz": 640, "batch": 16, "batches": 4, "boxes": 4, "iou": 0.5,
                    "configs": [(8, 1), (16, 4), (16, 8), (32, 4)]},
        "agreement_imgsz": 320,
        "prune": {"plans": ROOT / "benchmarks" / "results" / "gpu" / "prune_plans.json", "imgsz": 640, "warmup": 10,
                  "repeats": 50, "batches": [1, 16]},
        "profile": {"model": "embedded", "imgsz": 640, "modes": ["eager", "graph"], "repeats": 5}}
TINY = {"models": ["yolov8n"], "imgsz": [64], "modes": ["eager"], "repeats": 1, "conf": {},
        "scoring": {"model": "yolov8n.yaml", "imgsz": 64, "batch": 2, "batches": 1, "boxes": 1, "iou": 0.01,
                    "configs": [(8, 1), (2, 2)]},
        "agreement_imgsz": 160,
        "prune": {"plans": None, "model": "yolov8n.yaml", "targets": [0.3], "imgsz": 64, "warmup": 1, "repeats": 2},
        "profile": {"model": "yolov8n", "imgsz": 64, "modes": ["eager"], "repeats": 1}}
NO_COMPILER = ("eager", "graph")  # modes timed before those that compile


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
        if "error" in row:
            bad.append(f"{label}: {row['error']}")
            continue
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


def check_prune(r: dict) -> list[str]:
    bad = []
    if not any(row["mode"] != "unpruned" for row in r["rows"]):
        bad.append("prune: no pruned model was timed")
    for row in r["rows"]:
        for key in ("min_ms", "median_ms", "speedup"):
            if not (isinstance(row.get(key), float) and math.isfinite(row[key]) and row[key] > 0):
                bad.append(f"prune {row['model']} {row['mode']} {row['target']}: {key} = {row.get(key)!r}")
    return bad


def check_profile(r: dict) -> list[str]:
    bad = []
    if not r["rows"]:
        bad.append("profile: no row")
    for row in r["rows"]:
        for key in ("decode_s", "from_path_s", "from_array_s", "profiled_wall_s"):
            if not (isinstance(row.get(key), float) and math.isfinite(row[key]) and row[key] > 0):
                bad.append(f"profile {row['mode']}: {key} = {row.get(key)!r}")
    return bad


CHECKS: dict[str, Callable[[dict], list[str]]] = {
    "tests": check_tests, "speed": check_speed, "scoring": check_scoring, "agreement": check_agreement,
    "prune": check_prune, "profile": check_profile,
}
ORDER = ("agreement", "scoring", "prune", "profile", "speed", "tests")  # cheapest and most wanted first


# -- the sections --------------------------------------------------------------------------------------------------

def run_tests(device: str, cfg: dict, timeout: float | None = None) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "tests/test_compiled.py",
           "-p", "no:cacheprovider"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"command": " ".join(cmd[1:]), "returncode": f"timed out after {timeout:.0f} s", "tail": out[-2000:]}
    return {"command": " ".join(cmd[1:]), "returncode": p.returncode, "tail": p.stdout[-2000:]}


def speed_rows(cfg: dict) -> list[tuple[int, str, str]]:
    """(imgsz, model, mode) in the order timed: every size and model in the modes that need no compiler, then the
    compiled modes, so that a budget cut short still has the eager and graph figures."""
    cheap = [(i, n, m) for i in cfg["imgsz"] for n in cfg["models"] for m in cfg["modes"] if m in NO_COMPILER]
    dear = [(i, n, m) for i in cfg["imgsz"] for n in cfg["models"] for m in cfg["modes"] if m not in NO_COMPILER]
    return cheap + dear


def run_speed(device: str, cfg: dict, budget: float) -> dict:
    import copy

    import explain_speed

    import fxgraph

    rows, skipped, start = [], [], time.perf_counter()
    graphs: dict[tuple[str, int], tuple[Any, Path]] = {}  # each model traced once per size; each row gets a copy
    for imgsz, name, mode in speed_rows(cfg):
        label = f"{name} {imgsz} {mode}"
        if mode == "cudagraph" and torch.device(device).type != "cuda":
            skipped.append(f"{label} (CUDA graphs need CUDA)")
            continue
        if time.perf_counter() - start > budget:
            skipped.append(f"{label} (over the {budget:.0f} s budget)")
            continue
        if (name, imgsz) not in graphs:
            model, image = explain_speed.model_and_image(name)
            graphs[name, imgsz] = fxgraph.trace(model, imgsz, fold_bn=True, device=device), image
        graph, image = graphs[name, imgsz]
        try:
            rows.append(explain_speed.measure(name, copy.deepcopy(graph), imgsz, cfg["repeats"], 4, device, image,
                                              cfg["conf"].get(name, 0.25), mode))
        except explain_speed.NoDetection as e:
            skipped.append(f"{label} ({e})")
        except Exception as e:  # noqa: BLE001 - one broken row is reported, the others still run
            rows.append({"model": name, "imgsz": imgsz, "mode": mode, "error": f"{type(e).__name__}: {e}"})
        print(f"speed {label}: done at {time.perf_counter() - start:.0f} s", flush=True)
    return {"rows": rows, "skipped": skipped}


def run_scoring(device: str, cfg: dict) -> dict:
    import scoring_throughput

    s = cfg["scoring"]
    model = s["model"] or str(__import__("fxgraph").embedded_weights())
    args = SimpleNamespace(model=model, imgsz=s["imgsz"], batch=s["batch"], batches=s["batches"], boxes=s["boxes"],
                           iou=s["iou"], target="all", repeats=cfg["repeats"], device=device, per_box=False,
                           configs=s["configs"])
    try:
        r = scoring_throughput.measure(args)
    except Exception as e:  # noqa: BLE001 - a setting that fails (memory) must not cost the default's figure
        if len(s["configs"]) == 1:
            raise
        args.configs = s["configs"][:1]
        r = {**scoring_throughput.measure(args), "configs_error": f"{type(e).__name__}: {e}"[:500]}
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


def run_profile(device: str, cfg: dict) -> dict:
    """Where one box's time goes: decoding the image file, the explain call from a path and from a decoded array,
    and, under torch.profiler, the device's kernel time against the call's wall time (host-bound when far below)."""
    import explain_speed
    from random_models import best_candidate_boxes
    from torch.profiler import ProfilerActivity, profile

    import relprop
    from relprop.image import read_image

    p = cfg["profile"]
    model, path = explain_speed.model_and_image(p["model"])
    cuda = torch.device(device).type == "cuda"
    rows = []
    for mode in p["modes"]:
        ex = relprop.Explainer(model, p["imgsz"], device=device, compile=explain_speed.COMPILE[mode])
        image = read_image(path)
        if p["model"] in explain_speed.RANDOM:
            (box, _), = best_candidate_boxes(ex.graph, image, 1)
            kw = {"iou": 0.5}
        else:
            det = ex.explain(path)[0]
            box, kw = det.box, {"cls": det.cls}
        fns = {"decode": lambda: read_image(path), "from_path": lambda: ex.explain(path, box, **kw),
               "from_array": lambda: ex.explain(image, box, **kw)}
        t = explain_speed.timed(fns, p["repeats"], device)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            start = time.perf_counter()
            ex.explain(image, box, **kw)
            if cuda:
                torch.cuda.synchronize(device)
            wall = time.perf_counter() - start
        events = prof.key_averages()
        device_us = sum(getattr(e, "self_device_time_total", 0) or 0 for e in events)
        launches = sum(e.count for e in events if "LaunchKernel" in e.key or e.key == "cudaGraphLaunch")
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
        rows.append({"model": p["model"], "imgsz": p["imgsz"], "mode": mode,
                     **{f"{k}_s": v["min"] for k, v in t.items()},
                     "profiled_wall_s": wall, "device_busy_s": device_us / 1e6, "kernel_launches": launches,
                     "top_host_ops": [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "count": e.count}
                                      for e in top]})
    return {"rows": rows}


def run_prune(device: str, cfg: dict) -> dict:
    """Pruning's width / depth / both latency on `device`: torch, batch 1, float16 on CUDA, interleaved."""
    import pruning
    from prune_depth_latency import load
    from pruning.latency import LatencyOptions, measure_latency

    import fxgraph

    p = cfg["prune"]
    if p["plans"] is not None:
        made = json.loads(Path(p["plans"]).read_text())
        source = {"plans": str(Path(p["plans"]).relative_to(ROOT)), "command": made["command"],
                  "criterion": made["criterion"]}
    else:  # --tiny: plans made here, width and both at each target
        made = {"models": {p["model"]: {"label": p["model"], "rows": []}}}
        g = fxgraph.trace(load(p["model"])[0], imgsz=p["imgsz"])
        for target in p["targets"]:
            for mode, depth in (("width", "never"), ("both", "auto")):
                plan, report = pruning.plan_for_target(g, target, metric="gflops", criterion="l1", depth=depth,
                                                       imgsz=p["imgsz"])
                made["models"][p["model"]]["rows"].append(
                    {"mode": mode, "target": target, "gflops_removed": 1 - report.gflops_ratio,
                     "blocks_removed": len(plan.blocks), "plan": plan.to_json()})
        source = {"plans": "made here", "criterion": "l1"}
    cuda = torch.device(device).type == "cuda"
    opts = LatencyOptions(imgsz=p["imgsz"], runtime="torch", device=device, dtype="float16" if cuda else "float32",
                          warmup=p["warmup"], repeats=p["repeats"])
    rows = []
    for name, entry in made["models"].items():
        g = fxgraph.trace(load(name)[0], imgsz=p["imgsz"])
        family = [{"model": entry["label"], "mode": "unpruned", "target": 0.0, "gflops_removed": 0.0,
                   "blocks_removed": 0}]
        models = [g.model]
        for r in entry["rows"]:
            models.append(pruning.prune(g, pruning.Plan.from_json(r["plan"])).model)
            family.append({"model": entry["label"], **{k: v for k, v in r.items() if k != "plan"}})
        settings = [(False, 1)] + [(True, b) for b in p.get("batches", [1])] if cuda else [(False, 1)]
        for capture, batch in settings:  # kernels launched one by one, then one CUDA graph at each batch size
            runtime = ("CUDA graph" if capture else "eager") + (f", batch {batch}" if batch > 1 else "")
            timed = [{**row, "runtime": runtime} for row in family]
            for row, lat in zip(timed, measure_latency(models, dataclasses.replace(opts, cuda_graph=capture,
                                                                                   batch=batch))):
                row.update(min_ms=lat.min_ms, median_ms=lat.median_ms)
            for row in timed:
                row["speedup"] = timed[0]["min_ms"] / row["min_ms"]
                row["speedup_median"] = timed[0]["median_ms"] / row["median_ms"]
            rows += timed
        print(f"prune {name}: {len(models)} models timed", flush=True)
    return {"conditions": opts.conditions() + ("; eager, and CUDA graph replay at the batch sizes named" if cuda else ""),
            **source,
            "rows": rows}


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
        boxes_per_image = sc["boxes_explained"] / sc["images"]
        lines += ["", f"Scoring ({sc['model']}, {sc['imgsz']} px, {sc['images']} images, {sc['boxes_explained']} "
                  f"boxes): {sc['scoring']['images_per_s_best']:.2f} img/s "
                  f"({boxes_per_image * sc['scoring']['images_per_s_best']:.0f} boxes/s) against training "
                  f"{sc['training']['images_per_s_best']:.2f} img/s (ratio {sc['ratio_best']:.3f} min, "
                  f"{sc['ratio_median']:.3f} median)."]
        if len(sc.get("configs", [])) > 1:
            lines += ["", "| DetDSHAP batch | chunk | boxes/s min (median) |", "|---|---|---|",
                      *[f"| {c['batch']} | {c['chunk']} | {c['boxes_per_s_best']:.0f} ({c['boxes_per_s_median']:.0f}) |"
                        for c in sc["configs"]]]
    pf = report["sections"].get("profile")
    if pf and "rows" in pf:
        lines += ["", "Where one box's time goes (min of the repeats; the profiled call is one more, from the decoded "
                  "array):", "", "| model | imgsz | mode | decode image ms | explain from path ms | from array ms "
                  "| profiled wall ms | device busy ms | kernel launches |", "|---|---|---|---|---|---|---|---|---|"]
        for r in pf["rows"]:
            lines.append(f"| {r['model']} | {r['imgsz']} | {r['mode']} | {1e3 * r['decode_s']:.1f} | "
                         f"{1e3 * r['from_path_s']:.1f} | {1e3 * r['from_array_s']:.1f} | "
                         f"{1e3 * r['profiled_wall_s']:.1f} | {1e3 * r['device_busy_s']:.1f} | {r['kernel_launches']} |")
    pr = report["sections"].get("prune")
    if pr and "rows" in pr:
        lines += ["", f"Pruning latency ({pr['conditions']}; plans: {pr['plans']}, criterion {pr['criterion']}, "
                  "not fine-tuned):", "",
                  "| model | runtime | mode | target | GFLOPs removed | blocks | ms min / median "
                  "| speed-up min (median) |", "|---|---|---|---|---|---|---|---|"]
        for r in pr["rows"]:
            target = r["target"] if isinstance(r["target"], str) else f"{r['target']:.0%}"
            lines.append(f"| {r['model']} | {r.get('runtime', 'eager')} | {r['mode']} | {target} | {r['gflops_removed']:.1%} | {r['blocks_removed']} "
                         f"| {r['min_ms']:.2f} / {r['median_ms']:.2f} | {r['speedup']:.2f}x ({r['speedup_median']:.2f}x) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes and one model (CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu")
    ap.add_argument("--only", nargs="+", choices=sorted(CHECKS), default=sorted(CHECKS))
    ap.add_argument("--speed-budget", type=float, default=240.0, help="seconds after which no speed row starts")
    ap.add_argument("--deadline", type=float, default=520.0,
                    help="seconds after which no section starts (the cuda tests are stopped there)")
    ap.add_argument("--models", nargs="+", default=None, help="speed: these models instead of the configuration's")
    ap.add_argument("--imgsz", nargs="+", type=int, default=None, help="speed: these image sizes")
    ap.add_argument("--modes", nargs="+", default=None, help="speed: these relevance-pass modes")
    ap.add_argument("--scoring-configs", nargs="+", default=None, metavar="BATCH:CHUNK",
                    help="scoring: these DetDSHAP (batch, chunk) settings (the first is the checked figure)")
    ap.add_argument("--prune-batches", nargs="+", type=int, default=None,
                    help="prune: batch sizes timed with CUDA-graph replay (default 1 and 16; eager is always batch 1)")
    ap.add_argument("--plans", type=Path, default=None, help="plans for the prune section (prune_depth_latency.py "
                    "--plans-out); default: benchmarks/results/gpu/prune_plans.json")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device is available here", file=sys.stderr)
        return 2
    cfg = TINY if args.tiny else FULL
    cfg = {**cfg, **{k: v for k, v in (("models", args.models), ("imgsz", args.imgsz), ("modes", args.modes)) if v}}
    if args.scoring_configs:
        configs = [tuple(int(v) for v in c.split(":")) for c in args.scoring_configs]
        cfg = {**cfg, "scoring": {**cfg["scoring"], "configs": configs}}
    if args.prune_batches:
        cfg = {**cfg, "prune": {**cfg["prune"], "batches": args.prune_batches}}
    if args.plans is not None:
        cfg = {**cfg, "prune": {**cfg["prune"], "plans": args.plans.resolve()}}
    start = time.perf_counter()
    sections: dict[str, Any] = {}
    failures: dict[str, list[str]] = {}
    left = lambda: args.deadline - (time.perf_counter() - start)  # noqa: E731
    runners = {"tests": lambda: run_tests(args.device, cfg, timeout=max(30.0, left())),
               "speed": lambda: run_speed(args.device, cfg, min(args.speed_budget, max(0.0, left() - 60))),
               "scoring": lambda: run_scoring(args.device, cfg), "agreement": lambda: run_agreement(args.device, cfg),
               "prune": lambda: run_prune(args.device, cfg), "profile": lambda: run_profile(args.device, cfg)}
    report = {"device": args.device, "device_name": device_name(args.device), "torch": torch.__version__,
              "tiny": args.tiny, "command": "python benchmarks/gpu_suite.py " + " ".join(argv or sys.argv[1:]),
              "seconds": 0.0, "sections": sections, "failures": failures, "not_started": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ORDER:
        if name not in args.only:
            continue
        if left() <= 0:
            report["not_started"].append(name)
            failures[name] = [f"{name} not started: past the {args.deadline:.0f} s deadline"]
            continue
        try:
            sections[name] = runners[name]()
            failures[name] = CHECKS[name](sections[name])
        except Exception as e:  # noqa: BLE001 - a crashed section is a failed check, and the others still run
            sections[name] = {"error": f"{type(e).__name__}: {e}"}
            failures[name] = [f"{name} crashed: {type(e).__name__}: {e}"]
        print(f"{name}: {'FAIL ' + '; '.join(failures[name]) if failures[name] else 'pass'} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        report["seconds"] = time.perf_counter() - start
        write(report, args.out)
    report["seconds"] = time.perf_counter() - start
    write(report, args.out)
    print(markdown(report))
    return 1 if any(failures.values()) else 0


def write(report: dict, out: Path) -> None:
    """The JSON and the table, rewritten after every section."""
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_suite.md").write_text(markdown(report))


if __name__ == "__main__":
    raise SystemExit(main())
