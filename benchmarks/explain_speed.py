"""How much does explaining a box cost compared with a forward pass?  (issue 3, "Speed")

    python benchmarks/explain_speed.py [--imgsz 640 320] [--repeats 3] [--device cpu]

For yolov8n (random weights, BatchNorm statistics recalibrated) and the embedded YOLOv8s on ultralytics's bus.jpg,
yolo26n (random weights, BatchNorm recalibrated, default one2many branch) on bus.jpg, the real YOLO11s of uitag
(`yolo11s-ui`, 9 UI classes) on its VS Code screenshot, and, on bus.jpg with random weights (BatchNorm recalibrated),
yolo11n-pose explaining every keypoint of a box (target "keypoints") and yolo11n-obb explaining a rotated box (target
"box", boxes given as xywhr), it measures:

* forward      — the traced graph (BatchNorm folded, as ultralytics fuses it for inference), no autograd
* forward+grad — the same graph with autograd, plus one plain-gradient backward (what "a forward with autograd" costs)
* explain 1    — `Explainer.explain(image, box)` for one box, reference pass cached (the steady state)
* explain all  — `Explainer.explain(image)` for the D boxes NMS keeps (at most `--boxes`; for random weights, the
                 D best candidates given as a list of boxes), as time per box and as the marginal cost of each box
                 after the first

Times are the minimum over `--repeats` interleaved rounds after one warm-up (the machine may be shared; medians are
kept in the JSON).  Memory is the activation memory retained for the
backward pass (bytes of tensors saved by autograd, storages counted once) plus, for explaining, the cached reference
pass; it is not the allocator's peak, which torch does not report on CPU.  Writes
benchmarks/results/explain_speed.json and .md; `--append` keeps the rows already there (a row of the same model and
size is replaced) and records each row's run (command, load), for adding models without re-running the others.
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

import torch  # noqa: E402
import ultralytics  # noqa: E402

import relprop  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402
from bench_timing import interleaved, sync  # noqa: E402
from random_models import best_candidate_boxes, random_model  # noqa: E402

BUS = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
RESULTS = ROOT / "benchmarks" / "results"


def timed(fns: dict, repeats: int, device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """Run every function once to warm up, then `repeats` rounds of all of them interleaved; per function the min
    (robust to other jobs on a shared machine: interference only adds time) and the median, in seconds.  On CUDA the
    device is synchronised before and after every timed call."""
    times = interleaved(fns, repeats, device)
    return {name: {"min": min(ts), "median": statistics.median(ts)} for name, ts in times.items()}


class SavedBytes:
    """Count the bytes autograd saves for backward (each storage once) while the context is active."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        s = t.untyped_storage()
        self.storages[s.data_ptr()] = s.nbytes()
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class NoDetection(Exception):
    """A trained model finds nothing to explain at this size: its row is left out, the other rows are kept."""


RANDOM = ("yolov8n", "yolo26n", "yolo11n-pose", "yolo11n-obb")  # random weights: nothing passes NMS, explain the
# best candidates
TARGETS = {"yolo11n-pose": "keypoints", "yolo11n-obb": "box"}  # what is explained (default: the class)


# relevance pass: eager, traced ATen graphs (relprop.joint), torch.compile (inductor), and inductor + CUDA-graph capture
MODES = ("eager", "graph", "compiled", "cudagraph")
COMPILE = {"eager": False, "graph": "graph", "compiled": True, "cudagraph": "cudagraph"}  # Explainer(compile=...)


def measure(name: str, model, imgsz: int, repeats: int, boxes: int, device: str, path: Path = BUS,
            conf: float = 0.25, mode: str = "eager") -> dict:
    ex = relprop.Explainer(model, imgsz, device=device, compile=COMPILE[mode])
    target = TARGETS.get(name, "class")
    g = ex.graph
    image = read_image(path)
    x = to_input(image, Letterbox.fit(image.shape[:2], g.imgsz), g.dtype, g.device)

    def forward():
        with torch.no_grad():
            g.module(x)

    def forward_grad():
        xr = x.clone().requires_grad_(True)
        out = g.module(xr)[0]
        torch.autograd.grad(out[:, 4].sum(), xr)

    if name in RANDOM:
        # random weights detect nothing (and tie their scores): explain the best-scoring candidates as a
        # list of boxes, which shares the forward exactly as the NMS mode does
        chosen = [b for b, _ in best_candidate_boxes(g, image, boxes)]
        dets = ex.explain(path, chosen, iou=0.5, target=target)

        def explain_all():
            ex.explain(path, chosen, iou=0.5, target=target)
    else:
        dets = ex.explain(path, conf=conf)

        def explain_all():
            ex.explain(path, conf=conf, max_det=boxes)

    if not dets:
        raise NoDetection(f"{name}: no detection on {path.name} at {imgsz} (conf {conf}); row left out")
    dets = dets[:boxes]
    box, cls = dets[0].box, (dets[0].cls if name not in RANDOM else None)

    def explain_one():
        ex.explain(path, box, cls=cls, iou=0.5 if name in RANDOM else 0.7, target=target)

    t = timed({"forward": forward, "forward_grad": forward_grad, "one": explain_one, "all": explain_all}, repeats,
              g.device)
    cuda_peak = {}
    if torch.device(g.device).type == "cuda":  # peak device memory of each call above what is already allocated
        for key, fn in (("forward_grad", forward_grad), ("explain_one", explain_one), ("explain_all", explain_all)):
            sync(g.device)
            base = torch.cuda.memory_allocated(g.device)
            torch.cuda.reset_peak_memory_stats(g.device)
            fn()
            sync(g.device)
            cuda_peak[f"cuda_peak_{key}_mb"] = (torch.cuda.max_memory_allocated(g.device) - base) / 2**20
    t_fwd, t_grad, t_one, t_all = (t[k]["min"] for k in ("forward", "forward_grad", "one", "all"))
    d = len(dets)

    with SavedBytes() as fg:
        xr = x.clone().requires_grad_(True)
        out = g.module(xr)[0]
    mem_grad = fg.total
    del out, xr
    refs = next(iter(ex._refs.values()))
    with SavedBytes() as ee:
        held = ex.engine.forward(x, refs)  # phase one of an explanation: what its backward will need
    mem_explain = ee.total + refs.nbytes()
    del held
    return {
        "model": name,
        "target": target,
        "mode": mode,
        "compile_failed": getattr(ex.engine, "failed", None),  # a compiled mode that fell back to eager says why
        "image": path.name,
        "imgsz": imgsz,
        "device": str(g.device),
        "boxes": d,
        "forward_s": t_fwd,
        "forward_grad_s": t_grad,
        "explain_one_s": t_one,
        "explain_all_s": t_all,
        "per_box_all_s": t_all / d,
        "marginal_box_s": (t_all - t_one) / (d - 1) if d > 1 else None,
        "ratio_one_to_forward": t_one / t_fwd,
        "ratio_marginal_to_forward": ((t_all - t_one) / (d - 1)) / t_fwd if d > 1 else None,
        "median_s": {k: v["median"] for k, v in t.items()},
        "mem_forward_grad_mb": mem_grad / 2**20,
        "mem_explain_mb": mem_explain / 2**20,
        "ratio_mem_explain_to_forward_grad": mem_explain / mem_grad,
        **cuda_peak,
    }


def uitag_yolo11s() -> tuple[Path, Path]:
    """uitag's trained YOLO11s (pip install --no-deps uitag==0.6.0) and its VS Code screenshot."""
    import importlib.util

    spec = importlib.util.find_spec("uitag")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("yolo11s-ui needs the package uitag: pip install --no-deps uitag==0.6.0")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "models" / "yolo-ui.pt", root / "assets" / "vscode-dark-1920x1080.png"


def model_and_image(name: str):
    """(model, image path) of a benchmark model name."""
    if name == "yolov8n":
        return random_model(), BUS
    if name == "yolo26n":
        return random_model("yolo26n.yaml"), BUS
    if name == "yolo11s-ui":
        return uitag_yolo11s()
    if name in ("yolo11n-pose", "yolo11n-obb"):
        return random_model(f"{name}.yaml"), BUS
    if name == "embedded":
        return None, BUS
    raise SystemExit(f"unknown model {name!r}: choose from yolov8n, embedded, yolo26n, yolo11s-ui, yolo11n-pose, "
                     "yolo11n-obb")


def markdown(rows: list[dict], runs: list[dict]) -> str:
    lines = ["# Explain speed (relprop)", ""]
    for i, meta in enumerate(runs, 1):
        lines.append(
            f"Run {i}: machine {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; device "
            f"{meta['device']}; min of {meta['repeats']} interleaved runs after a warm-up (medians in the .json); 1-min "
            f"load average before/after {meta['load_average_before_after']}.  Command: `{meta['command']}`"
        )
        lines.append("")
    lines += [
        "Other jobs share the machine: compare ratios within a run, not seconds across runs.",
        "",
        "| run | model | target | image | imgsz | forward s | fwd+grad s | explain 1 box s | × fwd | boxes | per box (all) s "
        "| marginal box s | × fwd | mem fwd+grad MB | mem explain MB | × |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        marg = "-" if r["marginal_box_s"] is None else f"{r['marginal_box_s']:.3f}"
        margr = "-" if r["ratio_marginal_to_forward"] is None else f"{r['ratio_marginal_to_forward']:.2f}"
        lines.append(
            f"| {r.get('run', 1)} | {r['model']} | {r.get('target', 'class')} | {r.get('image', 'bus.jpg')} | {r['imgsz']} | {r['forward_s']:.3f} | "
            f"{r['forward_grad_s']:.3f} | {r['explain_one_s']:.3f} | {r['ratio_one_to_forward']:.2f} | {r['boxes']} | "
            f"{r['per_box_all_s']:.3f} | {marg} | {margr} | {r['mem_forward_grad_mb']:.0f} | {r['mem_explain_mb']:.0f} | "
            f"{r['ratio_mem_explain_to_forward_grad']:.2f} |"
        )
    lines += [
        "",
        "forward: the BN-folded traced graph without autograd. explain 1 box: one `Explainer.explain(image, box)` with "
        "the reference pass cached (image reading, letterbox, matching and the heatmap included). marginal box: "
        "(explain all − explain 1) / (boxes − 1). Memory: activations saved for backward (storages counted once), "
        "plus the cached reference pass for explaining. Goals (issue 3): explain 1 box ≤ 3× forward, each further "
        "box ≤ 1.2× forward, memory ≤ 3× forward with autograd. yolov8n and yolo26n have random weights (BatchNorm "
        "recalibrated) and explain their best candidates given as boxes, as do yolo11n-pose (target keypoints: x, y and "
        "visibility of all 17 keypoints of the matched candidates) and yolo11n-obb (target box: x, y, w, h and angle "
        "of the matched candidates, boxes given as xywhr); yolo11s-ui is uitag's trained YOLO11s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--imgsz", type=int, nargs="+", default=[640, 320])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--boxes", type=int, default=4, help="boxes for 'explain all' (max_det)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["yolov8n", "embedded", "yolo26n", "yolo11s-ui", "yolo11n-pose",
                                                        "yolo11n-obb"])
    parser.add_argument("--conf", type=float, default=0.25,
                        help="NMS confidence of the trained models' detections (uitag's YOLO11s finds none at 0.25 "
                             "on its screenshot at 320 px)")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows of explain_speed.json (same model and size: replaced) and add these")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=MODES,
                        help="relevance pass: eager, graph (traced ATen graphs), compiled (torch.compile) and/or "
                             "cudagraph (compiled + CUDA graphs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = []
    for imgsz in args.imgsz:
        for name, mode in [(n, m) for n in args.models for m in args.modes]:
            model, image = model_and_image(name)
            try:
                row = measure(name, model, imgsz, args.repeats, args.boxes, args.device, image, args.conf, mode)
            except NoDetection as exc:
                print(exc, flush=True)
                continue
            print(json.dumps(row), flush=True)
            rows.append(row)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "repeats": args.repeats,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "command": "python " + " ".join(["benchmarks/explain_speed.py", *(argv or sys.argv[1:])]),
    }
    out = Path(args.out)
    runs, old_rows = [], []
    if args.append and (out / "explain_speed.json").is_file():
        old = json.loads((out / "explain_speed.json").read_text())
        runs = old.get("runs") or [old["meta"]]
        new_keys = {(r["model"], r["imgsz"], r.get("mode", "eager")) for r in rows}
        old_rows = [r for r in old["rows"] if (r["model"], r["imgsz"], r.get("mode", "eager")) not in new_keys]
    runs.append(meta)
    rows = old_rows + [{**r, "run": len(runs)} for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    (out / "explain_speed.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))
    (out / "explain_speed.md").write_text(markdown(rows, runs))
    print(markdown(rows, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
