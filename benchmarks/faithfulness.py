"""Is the explanation right?  Faithfulness and cost of relprop against the other ways to explain a YOLO box (issue 6).

    python benchmarks/faithfulness.py [--imgsz 320] [--drise-masks 500] [--ig-steps 16] [--threads 2]
                                      [--shapes-weights PATH | --train-shapes] [--quick]

Every method explains the same scalar per box — relprop's target "class": the sum, over the raw candidates matched to
the box (IoU ≥ 0.7 with the detection, same class), of the class probability — on the same boxes:

* relprop (DeepSHAP rules on the fx graph) against the black reference (default), a blurred reference, and K = 8
  references (2 blurs, 2 grey-noise images, 4 half-image shifts of the image itself);
* gradient × (x − x0) and Integrated Gradients (midpoint rule, `--ig-steps`) from the black reference, on the same
  traced graph (`Explainer.graph.module`);
* Grad-CAM and EigenCAM (pytorch-grad-cam) on the neck C2f layers 15, 18, 21 of the ultralytics model, Grad-CAM
  targeted at the same score (EigenCAM is class- and box-agnostic by construction);
* D-RISE (Petsiuk et al. 2021): `--drise-masks` RISE masks (16×16 grid, p = 0.5) over the black reference, weights =
  max over raw candidates of IoU(box) × p(class); one forward per mask;
* captum DeepLift / DeepLiftShap and shap DeepExplainer on the ultralytics model: run once, the error is recorded;
  and on a small ReLU CNN, relprop.attribute against captum DeepLift / DeepLiftShap (float64), with times.

Measures per box: energy pointing game (share of positive relevance inside the box), deletion and insertion AUC
(5 % steps of the image pixels, most relevant first, replaced by / revealed from the metric reference; score ÷ score
of the image) with the black reference and with the blurred one, completeness error |Σ R − (f(x) − f(x0))| / |f(x) −
f(x0)| for methods with a reference, and wall time per box ÷ the median forward pass of the same graph measured on the
same image in the same run.  Writes benchmarks/results/faithfulness.json, .md and faithfulness_maps.png.

`--datasets pose,obb` adds the rows of issue 27 (benchmarks/faith_tasks.py): random yolo11n-pose (target keypoints)
and yolo11n-obb (target box, rotated) on bus.jpg, deletion and insertion on the explained box's own score.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import ultralytics  # noqa: E402

import faith_methods as fm  # noqa: E402
import faith_tasks  # noqa: E402
from bench_timing import interleaved  # noqa: E402
import fxgraph  # noqa: E402
import relprop  # noqa: E402
from faith_metrics import completeness_error, energy_pointing_game, image_inputs, perturbation_curves  # noqa: E402
from relprop.image import read_image  # noqa: E402
from relprop.layercam import box_layercam, image_layercam  # noqa: E402
from relprop.target import detections  # noqa: E402
from random_models import best_candidate_boxes, random_model  # noqa: E402

ASSETS = Path(ultralytics.__file__).parent / "assets"
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ["relprop", "relprop_blur", "relprop_k8", "grad_x_input", "integrated_gradients", "gradcam", "eigencam",
           "drise", "layercam", "layercam_image"]
LABELS = {
    "layercam": "LayerCAM per box (ultralytics's computation)", "layercam_image": "ultralytics visualize=True (image)",
    "relprop": "relprop (black ref.)", "relprop_blur": "relprop (blur ref.)", "relprop_k8": "relprop (K=8 refs)",
    "grad_x_input": "gradient × input", "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM (neck)",
    "eigencam": "EigenCAM (neck)", "drise": "D-RISE",
}
PEERS = ["captum_deeplift", "captum_deepliftshap", "shap_deepexplainer"]


def k_references(array: np.ndarray, seed: int) -> list[np.ndarray]:
    """The K = 8 DeepSHAP references of an image (HWC BGR float): blurs at σ = max(H, W)/20 and /10, two grey images
    with Gaussian noise (σ = 40 grey levels), and the image rolled by half its width, half its height, both, and
    −¼ width with ½ height (natural-image statistics without the objects at their place)."""
    h, w = array.shape[:2]
    rng = np.random.default_rng(seed)
    refs = [cv2.GaussianBlur(array, (0, 0), sigmaX=s, sigmaY=s) for s in (max(h, w) / 20, max(h, w) / 10)]
    refs += [np.clip(127.5 + 40 * rng.standard_normal(array.shape), 0, 255).astype(np.float32) for _ in range(2)]
    for dy, dx in ((0, w // 2), (h // 2, 0), (h // 2, w // 2), (h // 2, -w // 4)):
        refs.append(np.roll(array, (dy, dx), axis=(0, 1)))
    return refs


def forward_time(module, x: torch.Tensor, repeats: int = 5) -> float:
    with torch.no_grad():
        module(x.unsqueeze(0))
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            module(x.unsqueeze(0))
            ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def forward_once(module, x: torch.Tensor) -> None:
    with torch.no_grad():
        module(x.unsqueeze(0))


def method_calls(use: set[str], ex, array, box, cls, iou, refs8, f, x, x0, model, score, cam_model, cands,
                 args) -> dict:
    """Method -> a call returning (its map summed over channels, what its completeness needs: the Explanation, the
    attribution total, or None).  The same calls make the maps and are timed (D-RISE, shared by the boxes of an
    image, is run apart)."""
    def explain(**kw):
        def call():
            e = ex.explain(array, box, cls=cls, iou=iou, **kw)
            return e.input_relevance.sum(0).numpy(), e
        return call

    def attribution(method, **kw):
        def call():
            attr, total = method(f, x, x0, **kw)
            return attr.sum(0).numpy(), total
        return call

    calls = {"relprop": explain(), "relprop_blur": explain(baseline="blur"), "relprop_k8": explain(baseline=refs8),
             "grad_x_input": attribution(fm.gradient_x_input),
             "integrated_gradients": attribution(fm.integrated_gradients, steps=args.ig_steps),
             "gradcam": lambda: (fm.cam_map("gradcam", cam_model, x, cls, cands), None),
             "eigencam": lambda: (fm.cam_map("eigencam", cam_model, x, cls, cands), None),
             "layercam": lambda: (box_layercam(model, x.unsqueeze(0), score)[0].double().numpy(), None),
             "layercam_image": lambda: (image_layercam(model, x.unsqueeze(0))[0].double().numpy(), None)}
    return {k: v for k, v in calls.items() if k in use or k == "relprop"}


def time_ratios(rounds: dict[str, list[float]], key: str, single: float, t_fwd: float) -> dict:
    """A box's time for `key`: the minimum over its interleaved rounds ÷ the minimum forward of the same rounds (and
    the ratio of medians).  A method outside the rounds (D-RISE, or --time-repeats 0) keeps its single timed call ÷
    the image's median forward."""
    if rounds.get(key):
        fwd = rounds["forward"]
        return {"time_s": min(rounds[key]), "time_median_s": statistics.median(rounds[key]), "forward_s": min(fwd),
                "time_x_forward": min(rounds[key]) / min(fwd),
                "time_x_forward_median": statistics.median(rounds[key]) / statistics.median(fwd),
                "rounds": len(fwd)}
    return {"time_s": single, "time_x_forward": single / t_fwd}


def run_dataset(name: str, weights, imgsz: int, items: list[tuple[Path, list | None]], args,
                figure_boxes: set[tuple[str, int]], peers: bool) -> dict:
    """Explain every box of every image with every selected method (`args.methods`); per-box records (and maps for
    the figure).  Detections are taken in confidence order, at most `args.max_boxes` per image."""
    use = set(args.methods)
    ex = relprop.Explainer(weights, imgsz)
    g = ex.graph
    model = fxgraph.load_ultralytics(weights).float().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    cam_model = fm.PredOnly(model)
    records, figure, peer_results, skipped = [], {}, None, []
    for image_path, gt in items:
        array = read_image(image_path)
        lb, x, x0, x_blur, valid = image_inputs(array, g.imgsz, g.dtype, g.device)
        refs8 = k_references(array, args.seed)
        t_fwd = forward_time(g.module, x)
        with torch.no_grad():
            pred = g.module(x.unsqueeze(0))[0][0]
        if gt is None:
            boxes = [(lb.box_to_original(d.box, clip=False), d.cls) for d in detections(pred, g.nc)]
            boxes, iou = boxes[:args.max_boxes], 0.7
        else:
            boxes, iou = [(np.asarray(b, dtype=np.float64), c) for b, c in gt], args.gt_iou
        if args.figure_only:
            boxes = boxes[:1]
        image_records = []
        for bi, (box, cls) in enumerate(boxes):
            torch.manual_seed(args.seed)
            try:
                e_black, t_black = timed(lambda: ex.explain(array, box, cls=cls, iou=iou))
            except relprop.NoMatchError as exc:
                skipped.append({"image": image_path.name, "box": np.round(box, 1).tolist(), "cls": int(cls),
                                "reason": str(exc).split(";")[0]})
                continue
            cls, cands, box_in = e_black.cls, e_black.candidates, e_black.box_input
            score = fm.box_score(cls, cands)
            f = fm.graph_score(g.module, score)
            with torch.no_grad():
                s_x, s_x0 = float(f(x.unsqueeze(0))[0]), float(f(x0.unsqueeze(0))[0])
            calls = method_calls(use, ex, array, box, cls, iou, refs8, f, x, x0, model, score, cam_model, cands, args)
            maps, times, compl = {}, {}, {}
            maps["relprop"], times["relprop"] = e_black.input_relevance.sum(0).numpy(), t_black
            compl["relprop"] = abs(e_black.delta) / abs(e_black.score - e_black.reference_score)
            for key, call in calls.items():
                if key == "relprop":
                    continue
                (maps[key], total), times[key] = timed(call)
                if key.startswith("relprop_"):
                    assert np.array_equal(np.sort(total.candidates), np.sort(cands)), "same box, same candidates"
                    compl[key] = abs(total.delta) / abs(total.score - total.reference_score)
                elif total is not None:
                    compl[key] = completeness_error(total, s_x, s_x0)
            # the calls above were the warm-up; the order is rotated each round
            rounds = interleaved({"forward": lambda: forward_once(g.module, x), **calls}, args.time_repeats,
                                 warmup=False, rotate=True)
            if peers and peer_results is None:
                peer_results = run_peers(weights, x, x0, x_blur, cls, cands)
            image_records.append({"dataset": name, "image": image_path.name, "box": np.round(box, 2).tolist(),
                                  "box_input": np.round(box_in, 2).tolist(), "cls": int(cls),
                                  "candidates": len(cands), "score": s_x, "maps": maps, "times": times,
                                  "completeness": compl, "f": f, "rounds": rounds})
        if not image_records:
            continue
        if "drise" in use:  # the N masked forwards are shared by all boxes of the image; one box alone costs them all
            d = fm.drise(g.module, x, x0, [(np.asarray(r["box_input"]), r["cls"]) for r in image_records], g.nc,
                         n=args.drise_masks, batch=args.batch, seed=args.seed)
            for r, m in zip(image_records, d["maps"]):
                r["maps"]["drise"] = m
                r["times"]["drise"] = d["t_forward"] + d["t_weight"] / len(image_records)
                r["drise_amortized_time"] = (d["t_forward"] + d["t_weight"]) / len(image_records)
        for bi, r in enumerate(image_records):
            if args.figure_only:
                figure[(image_path.name, bi)] = {"image": x.permute(1, 2, 0).numpy(), "valid": valid,
                                                 "box": r["box_input"], "cls": r["cls"],
                                                 "maps": dict(r["maps"]), "title": f"{image_path.name} box {bi}"}
                continue
            metrics = {}
            for key in [k for k in METHODS if k in use]:
                m = {}
                if not args.timing_only:
                    m["pointing_game"] = energy_pointing_game(r["maps"][key], np.asarray(r["box_input"]), valid)
                    for ref_name, ref in (("black", x0), ("blur", x_blur)):
                        c = perturbation_curves(r["f"], x, ref, r["maps"][key], valid, batch=args.batch)
                        m[f"deletion_{ref_name}"], m[f"insertion_{ref_name}"] = c["deletion_auc"], c["insertion_auc"]
                        m[f"curves_{ref_name}"] = {"deletion": c["deletion"], "insertion": c["insertion"]}
                m["completeness_error"] = r["completeness"].get(key)
                m.update(time_ratios(r["rounds"], key, r["times"][key], t_fwd))
                metrics[key] = m
            r["metrics"], r["forward_s"] = metrics, t_fwd
            if (image_path.name, bi) in figure_boxes:
                figure[(image_path.name, bi)] = {"image": x.permute(1, 2, 0).numpy(), "valid": valid,
                                                 "box": r["box_input"], "cls": r["cls"],
                                                 "maps": dict(r["maps"]), "title": f"{image_path.name} box {bi}"}
            print(f"  {name} {image_path.name} box {bi}: " + ", ".join(
                f"{k} del {metrics[k]['deletion_black']:.3f} ins {metrics[k]['insertion_black']:.3f}" for k in
                ("relprop", "integrated_gradients", "drise", "layercam") if k in metrics and "deletion_black" in
                metrics[k]), flush=True)
            del r["maps"], r["f"], r["times"], r["completeness"], r["rounds"]
            records.append(r)
    return {"records": records, "figure": figure, "peers": peer_results, "skipped": skipped,
            "names": {int(k): v for k, v in g.names.items()}}


def run_peers(weights, x, x0, x_blur, cls, cands) -> list[dict]:
    """captum DeepLift / DeepLiftShap and shap DeepExplainer on the ultralytics model (a fresh copy each: a failed
    attempt may leave hooks behind)."""
    out = []
    base = fxgraph.load_ultralytics(weights).float().eval()
    refs = torch.stack([x0, x_blur])
    attempts = {
        "captum_deeplift": lambda m: fm.captum_deeplift(m, x, x0),
        "captum_deepliftshap": lambda m: fm.captum_deeplift(m, x, x0, shap_refs=refs),
        "shap_deepexplainer": lambda m: fm.shap_deep(m, x, refs),
    }
    for name, fn in attempts.items():
        model = fm.ScoreModel(copy.deepcopy(base), cls, cands)
        r = fm.try_peer(name, lambda: fn(model))
        attr = r.pop("attr")
        if attr is not None:  # it ran: say how far from complete it is
            with torch.no_grad():
                s, s0 = float(model(x.unsqueeze(0))[0, 0]), float(model(x0.unsqueeze(0))[0, 0])
            r["completeness_error"] = completeness_error(float(attr.sum()), s, s0)
        out.append(r)
    return out


# -- summary, table, figure --------------------------------------------------------------------------------------------

FIELDS = ["pointing_game", "deletion_black", "insertion_black", "deletion_blur", "insertion_blur",
          "completeness_error", "time_x_forward"]


def summarise(records: list[dict]) -> dict:
    """Mean ± std over boxes of each measure; time per box as the median over boxes of each box's ratio to a forward
    (time_ratios: minima of interleaved rounds), with its min and max over boxes."""
    t_fwd = min(r["forward_s"] for r in records) if records else float("nan")
    out = {}
    for key in [k for k in METHODS if records and all(k in r["metrics"] for r in records)]:
        row = {}
        for field in FIELDS:
            if field == "time_x_forward":
                vals = [r["metrics"][key]["time_x_forward"] for r in records]
                row[field] = {"median": float(np.median(vals)), "min": float(np.min(vals)), "max": float(np.max(vals)),
                              "forward_s": t_fwd, "n": len(vals)}
                continue
            vals = [r["metrics"][key].get(field) for r in records if r["metrics"][key].get(field) is not None]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                row[field] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
        out[key] = row
    return out


def fmt(cell: dict | None, digits: int = 3, pm: bool = True) -> str:
    if not cell:
        return "–"
    if pm:
        return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"
    return f"{cell['mean']:.{digits}g}"


def table(summary: dict, peers: list[dict] | None) -> list[str]:
    lines = ["| method | pointing game ↑ | deletion AUC ↓ (black) | insertion AUC ↑ (black) | deletion AUC ↓ (blur) "
             "| insertion AUC ↑ (blur) | completeness error | time per box ×fwd |",
             "|---|---|---|---|---|---|---|---|"]
    for key in [k for k in METHODS if k in summary]:
        s = summary[key]
        ce = s.get("completeness_error")
        lines.append(f"| {LABELS[key]} | {fmt(s.get('pointing_game'))} | {fmt(s.get('deletion_black'))} | "
                     f"{fmt(s.get('insertion_black'))} | {fmt(s.get('deletion_blur'))} | "
                     f"{fmt(s.get('insertion_blur'))} | {'–' if not ce else format(ce['mean'], '.2e')} | "
                     f"{s['time_x_forward']['median']:.3g} |")
    for p in peers or []:
        if p["ok"]:
            lines.append(f"| {p['name']} (YOLOv8) | ran; completeness error {p.get('completeness_error'):.2e} | | | | | | |")
        else:
            what = p["error"].split(". ")[0].replace("|", "/")
            lines.append(f"| {p['name']} (YOLOv8) | failed: {what} (full message in the JSON) | | | | | | |")
    return lines


def figure(fig_maps: dict, path: Path, names: dict, methods: list[str] = METHODS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = list(fig_maps.values())
    methods = [k for k in METHODS if k in methods]
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.8 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        valid = row["valid"]
        ys, xs = np.where(valid)
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        b = np.asarray(row["box"]) - [xs.min(), ys.min(), xs.min(), ys.min()]
        panels = [("image", row["image"][sl])] + [(k, row["maps"][k][sl]) for k in methods]
        for j, (key, img) in enumerate(panels):
            ax = axes[i, j]
            if key == "image":
                ax.imshow(np.clip(img, 0, 1))
                ax.set_title(f"{row['title']}\n{names.get(row['cls'], row['cls'])}", fontsize=8)
            else:
                gray = row["image"][sl].mean(-1)
                ax.imshow(gray, cmap="gray", vmin=0, vmax=1)
                if key in ("gradcam", "eigencam", "drise", "layercam", "layercam_image"):  # non-negative maps: min-max
                    show = (img - img.min()) / max(img.max() - img.min(), 1e-12)
                    ax.imshow(show, cmap="jet", vmin=0, vmax=1, alpha=0.55)
                else:  # pixel maps: smoothed (σ = 2 px) for display, symmetric scale at the 99.5th percentile
                    show = cv2.GaussianBlur(img.astype(np.float64), (0, 0), 2.0)
                    lim = np.percentile(np.abs(show), 99.5) or 1.0
                    ax.imshow(show, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.75)
                if i == 0:
                    ax.set_title(LABELS[key], fontsize=8)
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1))
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Relevance of the box's class score.  Pixel methods: red +, blue −, Gaussian-smoothed σ=2 px for "
                 "display.  Grad-CAM, EigenCAM, D-RISE: min-max scaled, jet.", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- synthetic shapes (optional: needs a detector trained on them) -----------------------------------------------------

def train_shapes(out: Path, minutes: float = 4.5) -> Path:
    """Train yolov8n from scratch on the synthetic shapes (128 px) for `minutes` on the CPU; returns best.pt."""
    from pruning.job.synthetic import ShapesConfig, make_shapes_dataset
    from ultralytics import YOLO

    data = make_shapes_dataset(out / "shapes", ShapesConfig())
    YOLO("yolov8n.yaml").train(data=str(data), imgsz=128, epochs=300, time=minutes / 60, batch=16, workers=0,
                               device="cpu", plots=False, amp=False, project=str(out / "runs"), name="n",
                               exist_ok=True, seed=0, deterministic=True, verbose=False)
    return out / "runs" / "n" / "weights" / "best.pt"


def yolo11_fixture() -> tuple[Path, list[Path]]:
    """uitag's trained YOLO11s and its two screenshots, found through importlib (`pip install --no-deps uitag`)."""
    import importlib.util

    spec = importlib.util.find_spec("uitag")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--datasets yolo11 needs the uitag fixture: pip install --no-deps uitag==0.6.0")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / "models" / "yolo-ui.pt", sorted((root / "assets").glob("*.png"))


def shapes_items(root: Path, limit: int) -> list[tuple[Path, list]]:
    """Validation images of the synthetic set with their ground-truth boxes (xyxy pixels, class)."""
    from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

    data = make_shapes_dataset(root / "shapes", ShapesConfig())
    images = sorted((Path(data).parent / "images" / "val").glob("*"))[:limit]
    items = []
    for img in images:
        h, w = cv2.imread(str(img)).shape[:2]
        label = Path(str(img).replace("/images/", "/labels/")).with_suffix(".txt")
        boxes = []
        for line in label.read_text().splitlines():
            v = [float(t) for t in line.split()]
            pts = np.asarray(v[1:]).reshape(-1, 2) * [w, h]
            boxes.append(((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()), int(v[0])))
        items.append((img, boxes))
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--drise-masks", type=int, default=500)
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="batch of the masked / perturbed forwards")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shapes-weights", type=Path, help="a detector trained on pruning.synthetic shapes")
    ap.add_argument("--train-shapes", action="store_true", help="train one (yolov8n, ~4.5 min CPU) if none is given")
    ap.add_argument("--shapes-images", type=int, default=6)
    ap.add_argument("--shapes-root", type=Path, default=Path("/tmp/faithfulness_shapes"))
    ap.add_argument("--gt-iou", type=float, default=0.5, help="IoU to match a ground-truth box to candidates")
    ap.add_argument("--quick", action="store_true", help="bus.jpg only, 64 masks (a smoke run; results not written)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--figure-only", action="store_true", help="only the maps of the figure (first box of each image)")
    ap.add_argument("--render", type=Path, help="re-write the summary and .md from a saved faithfulness.json (no run)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)} (default: all)")
    ap.add_argument("--datasets", default="real,shapes",
                    help="comma-separated: real (embedded YOLOv8s on bus/zidane), yolo11 (uitag's trained YOLO11s on "
                         "its two screenshots), yolo26 (random-weight yolo26n on bus.jpg: no YOLO26 weights exist in "
                         "any package), shapes (needs --shapes-weights/--train-shapes), pose and obb (random "
                         "yolo11n-pose / yolo11n-obb on bus.jpg, their keypoints / rotated-box target)")
    ap.add_argument("--task-boxes", type=int, default=3, help="boxes (best raw candidates) of the pose and obb rows")
    ap.add_argument("--yolo11-imgsz", type=int, default=640, help="image size of the yolo11 dataset (1920x1080 screens)")
    ap.add_argument("--max-boxes", type=int, default=1000, help="at most this many detections per image (by confidence)")
    ap.add_argument("--name", default="faithfulness", help="stem of the written .json/.md/_maps.png")
    ap.add_argument("--no-peers", action="store_true", help="skip the captum/shap attempts on the YOLOv8 model")
    ap.add_argument("--time-repeats", type=int, default=3,
                    help="interleaved rounds of a forward and every method per box, for the time column (0: one call)")
    ap.add_argument("--timing-only", action="store_true",
                    help="only the time column: skip pointing game and deletion/insertion (the costly part)")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        ap.error(f"--methods: unknown {unknown}; choose from {METHODS}")
    wanted = {d.strip() for d in args.datasets.split(",") if d.strip()}
    if not wanted or wanted - {"real", "yolo11", "yolo26", "shapes", *faith_tasks.TASKS}:
        ap.error(f"--datasets: choose from real, yolo11, yolo26, shapes, pose, obb; got {args.datasets!r}")
    if args.render:
        result = json.loads(args.render.read_text())
        for key in ("real", "yolo11", "yolo26", "shapes"):
            if key in result:
                result[key]["summary"] = summarise(result[key]["records"])
        args.render.write_text(json.dumps(result, indent=1, default=float))
        (args.out / f"{args.name}.md").write_text(markdown(result, {}))
        print((args.out / f"{args.name}.md").read_text())
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.quick:
        args.drise_masks = 64
    if args.figure_only:
        print("figure only: first box of bus.jpg and zidane.jpg", flush=True)
        real = run_dataset("embedded YOLOv8s", None, args.imgsz, [(ASSETS / n, None) for n in ("bus.jpg", "zidane.jpg")],
                           args, {("bus.jpg", 0), ("zidane.jpg", 0)}, peers=False)
        import pickle
        (Path("/tmp") / "faithfulness_figure.pkl").write_bytes(pickle.dumps(real["figure"]))
        figure(real["figure"], args.out / "faithfulness_maps.png", real["names"])
        return 0
    load0 = os.getloadavg()
    t_start = time.time()

    cnn = {}
    if importlib.util.find_spec("captum") is None:
        print("captum is not installed: the small ReLU CNN comparison is left out", flush=True)
    else:
        print("small ReLU CNN: relprop.attribute vs captum", flush=True)
        cnn = {"relu_only": fm.small_cnn_check(seed=args.seed, pool=False), "with_maxpool": fm.small_cnn_check(
            seed=args.seed, pool=True)}

    images = ["bus.jpg"] if args.quick else ["bus.jpg", "zidane.jpg"]
    fig_boxes = {("bus.jpg", 0), ("zidane.jpg", 0)}
    datasets, real = {}, {"figure": {}, "peers": None, "names": {}}
    if "real" in wanted:
        print("embedded YOLOv8s on", images, flush=True)
        real = run_dataset("embedded YOLOv8s", None, args.imgsz, [(ASSETS / n, None) for n in images], args,
                           fig_boxes, peers=not args.no_peers)
        datasets["real"] = real
    if "yolo11" in wanted and not args.quick:
        weights11, screens = yolo11_fixture()
        print("uitag YOLO11s on", [p.name for p in screens], flush=True)
        datasets["yolo11"] = run_dataset("uitag YOLO11s", str(weights11), args.yolo11_imgsz,
                                         [(p, None) for p in screens], args, set(), peers=False)
    if "yolo26" in wanted and not args.quick:
        model26 = random_model("yolo26n.yaml")
        boxes26 = best_candidate_boxes(relprop.Explainer(model26, args.imgsz).graph, read_image(ASSETS / "bus.jpg"),
                                       min(args.max_boxes, 3))
        print("random yolo26n on bus.jpg, its best candidates", flush=True)
        datasets["yolo26"] = run_dataset("random yolo26n", model26, args.imgsz, [(ASSETS / "bus.jpg", boxes26)], args,
                                         set(), peers=False)
    tasks = {}
    for task in [t for t in faith_tasks.TASKS if t in wanted and not args.quick]:
        print(f"random {faith_tasks.TASKS[task][0]} on bus.jpg, its best candidates", flush=True)
        tasks[task] = faith_tasks.run_task(task, args.imgsz, ASSETS / "bus.jpg", args.task_boxes, args.ig_steps,
                                           args.batch, args.seed)
    shapes_note = None
    weights = args.shapes_weights
    if weights is None and args.train_shapes and not args.quick:
        weights = train_shapes(args.shapes_root)
    if "shapes" not in wanted:
        weights = None
    if weights is not None and not args.quick:
        print("synthetic shapes with", weights, flush=True)
        datasets["shapes"] = run_dataset("shapes yolov8n", str(weights), 128,
                                         shapes_items(args.shapes_root, args.shapes_images), args, set(), peers=False)
    elif "shapes" in wanted:
        shapes_note = "synthetic shapes left out: no detector trained on them was given (--shapes-weights/--train-shapes)"

    result = {
        "command": "python benchmarks/faithfulness.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads, "
                   f"CPU; load average before/after {load0[0]:.2f}/{os.getloadavg()[0]:.2f}",
        "settings": {"imgsz": args.imgsz, "drise_masks": args.drise_masks, "drise_grid": 16, "drise_p": 0.5,
                     "ig_steps": args.ig_steps, "k_references": 8, "seed": args.seed, "steps": "5 %",
                     "target": "class (Σ over matched candidates of the class probability)",
                     "gt_iou": args.gt_iou, "shapes_images": args.shapes_images, "methods": args.methods,
                     "max_boxes": args.max_boxes, "yolo11_imgsz": args.yolo11_imgsz, "name": args.name,
                     "time_repeats": args.time_repeats, "timing_only": args.timing_only},
        "small_cnn": cnn,
        "peers_on_yolov8": real["peers"],
        "shapes_note": shapes_note,
        "runtime_s": time.time() - t_start,
        **tasks,
    }
    for key, ds in datasets.items():
        result[key] = {"summary": summarise(ds["records"]), "boxes": len(ds["records"]), "skipped": ds["skipped"],
                       "records": ds["records"]}
    if args.quick:
        print("\n".join(table(result["real"]["summary"], real["peers"])) if "real" in result else "")
        print(json.dumps(cnn, indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, default=float))
    if real["figure"] and not args.timing_only:  # a timing run's maps are those of the full run
        figure(real["figure"], args.out / f"{args.name}_maps.png", real["names"], args.methods)
    (args.out / f"{args.name}.md").write_text(markdown(result, datasets))
    print((args.out / f"{args.name}.md").read_text())
    return 0


def time_note(s: dict) -> str:
    """How the time column was taken (runs before --time-repeats existed timed one call per box)."""
    if s.get("time_repeats"):
        return (f"Time per box: for each box, {s['time_repeats']} interleaved rounds of a forward pass of the traced "
                "graph and every method (order rotated each round), the method's minimum ÷ the forward's minimum; "
                "the median of that ratio over boxes (min/max and the ratio of medians in the JSON).  relprop's "
                "reference pass is cached in these rounds (the steady state of explaining several boxes); D-RISE's "
                "time is its N masked forwards, timed once (amortised over the boxes of an image in the JSON).  ")
    return ("Time per box: median over boxes of the wall time ÷ the fastest forward pass of the same graph in the "
            "same run (each measured as the median of 5 on each image; the machine is shared, so single boxes vary "
            "several-fold; min/max in the JSON); D-RISE's time is its N masked forwards (shared when several boxes "
            "of one image are explained: amortised times are in the JSON); relprop's includes the reference pass "
            "when it is not cached.  ")


def markdown(result: dict, datasets: dict) -> str:
    s = result["settings"]
    cnn = result["small_cnn"]
    if not any(key in result for key in ("real", "yolo11", "yolo26", "shapes")):  # pose / OBB rows alone
        return "\n".join(["# Faithfulness on pose and OBB boxes (issue 27)", "",
                          f"Command: `{result['command'].strip()}`.  Machine: {result['machine']}.  imgsz "
                          f"{s['imgsz']}; IG {s['ig_steps']} steps; seed {s['seed']}.  Mean ± std over boxes.", "",
                          *faith_tasks.sections(result)])
    lines = ["# Faithfulness and cost of box explanations (issue 6)", "",
             f"Command: `{result['command'].strip()}`.  Machine: {result['machine']}.  imgsz {s['imgsz']}; "
             f"D-RISE {s['drise_masks']} masks (16×16 grid, p 0.5); IG {s['ig_steps']} steps; relprop K=8 references "
             "(2 blurs σ=max(H,W)/20 and /10, 2 grey+noise images, 4 half-image shifts); seed "
             f"{s['seed']}.  Explained score: {s['target']}.  Mean ± std over boxes.  Methods: "
             f"{', '.join(s.get('methods', METHODS))}.", ""]
    for key, title in (("real", "Embedded YOLOv8s (Normal/Fall) on bus.jpg and zidane.jpg, every NMS detection"),
                       ("yolo11", "uitag's trained YOLO11s (9 UI classes) on its two 1920×1080 screenshots, imgsz "
                        f"{s.get('yolo11_imgsz')}, the {s.get('max_boxes')} most confident detections per image"),
                       ("yolo26", f"yolo26n with random weights (BatchNorm recalibrated; no YOLO26 weights exist in any "
                        f"package), default one2many branch, bus.jpg at {s['imgsz']}, its best raw candidates as boxes"),
                       ("shapes", "yolov8n trained briefly on the synthetic shapes, ground-truth boxes of val images")):
        if key not in result:
            continue
        lines += [f"## {title} ({result[key]['boxes']} boxes)", ""]
        lines += table(result[key]["summary"], result["peers_on_yolov8"] if key == "real" else None)
        if result[key]["skipped"]:
            lines += ["", f"{len(result[key]['skipped'])} ground-truth boxes had no candidate of their class with "
                      f"IoU ≥ {s['gt_iou']} (the detector misses them) and were skipped."]
        lines.append("")
    lines += faith_tasks.sections(result)
    if result.get("shapes_note"):
        lines += [result["shapes_note"] + ".", ""]
    lines += ["Deletion/insertion: the image pixels (letterbox padding excluded) ranked by the map, 5 % steps, "
              "replaced by / revealed from the reference named in the column (black = the image content black, "
              "relprop's default reference; blur = Gaussian blur σ = max(H,W)/20); score ÷ score of the image; "
              "trapezoid area (insertion can exceed 1: a partly revealed image may score higher than the whole one).  "
              + time_note(s) +
              "Completeness error: |Σ R − (f(x) − f(x0))| / |f(x) − f(x0)|.", "",
              "## relprop.attribute vs captum on a small ReLU CNN (float64)", "",
              "| model | max abs diff DeepLift | max abs diff DeepLiftShap (K refs) | relprop completeness | captum "
              "completeness | time relprop / captum DeepLift | time relprop / captum DeepLiftShap |",
              "|---|---|---|---|---|---|---|"]
    for key, c in cnn.items():
        t = c["time_s"]
        lines.append(f"| {c['model']} | {c['deeplift_max_abs_diff']:.1e} | {c['deepliftshap_max_abs_diff']:.1e} | "
                     f"{c['relprop_completeness_max']:.1e} | {c['captum_completeness_max']:.1e} | "
                     f"{t['relprop']*1e3:.1f} ms / {t['captum_deeplift']*1e3:.1f} ms | "
                     f"{t['relprop_k']*1e3:.1f} ms / {t['captum_deepliftshap']*1e3:.1f} ms |")
    if not cnn:
        lines.append("| captum not installed in this run: left out | | | | | | |")
    lines += ["", "(relprop times with the traced graph reused; with tracing each call: see the JSON.)", "",
              "" if s.get("timing_only") or "real" not in result else
              f"Figure: `benchmarks/results/{s.get('name', 'faithfulness')}_maps.png`.",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
