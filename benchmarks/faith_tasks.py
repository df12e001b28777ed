"""Faithfulness on pose and OBB models (issue 27): deletion and insertion on the explained box's own score.

The explained score of a box is relprop's target on the matched raw candidates: its class probability (target
"class", the box's confidence, as in the detect tables), and what the task adds: for pose (target "keypoints") the sum
of x, y and visibility of every keypoint, for OBB (target "box") the sum of x, y, w, h and angle.  It is rebuilt as a
function of input batches from the target's weight map W (f = Σ W·pred, `relprop.target.Target.weights`) and checked
against the Explanation's own score before any map is measured.  No pose or OBB weights ship in any package we use, so
the models are random yolo11n-pose / yolo11n-obb with BatchNorm recalibrated (benchmarks/random_models.py), and the
boxes are their best raw candidates.

A coordinate does not fall to 0 when the image is deleted, so the curves are normalised as differences from the
metric reference: (f(x_k) − f(x0)) / (f(x) − f(x0)), 1 → 0 for deletion and 0 → 1 for insertion (DeepSHAP's
completeness splits exactly this difference).  A random ranking is kept as a reference row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

import faith_methods as fm
import relprop
from faith_metrics import STEPS, auc, completeness_error, image_inputs, perturbation_batch, ranking
from random_models import best_candidate_boxes, random_model
from relprop.image import Letterbox, read_image

TASKS = {"pose": ("yolo11n-pose.yaml", ("class", "keypoints")), "obb": ("yolo11n-obb.yaml", ("class", "box"))}
METHODS = ("relprop", "relprop_blur", "grad_x_input", "integrated_gradients", "random")
LABELS = {"relprop": "relprop (black ref.)", "relprop_blur": "relprop (blur ref.)", "grad_x_input": "gradient × input",
          "integrated_gradients": "Integrated Gradients", "random": "random ranking"}


def target_score(ex: relprop.Explainer, e: relprop.Explanation, x: torch.Tensor, lb: Letterbox, iou: float,
                 cls: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(batch) (B,): the score Explanation `e` explained (asked with `cls`), Σ W·pred with W its target's weights
    re-matched on x; a RuntimeError if f(x) or the candidates differ from the Explanation's (the row would measure
    something else)."""
    g = ex.graph
    with torch.no_grad():
        pred = g.module(x.unsqueeze(0))[0][0]
    opts = relprop.ExplainOptions(target=e.target, iou=iou, keypoint=e.keypoint)
    t = ex.match(pred, lb, e.box, cls, opts, keypoint=e.keypoint)
    w = t.weights(ex.layout, pred.shape[0], pred.shape[1], pred.dtype, pred.device)

    def f(batch: torch.Tensor) -> torch.Tensor:
        return (g.module(batch)[0] * w).flatten(1).sum(1)

    with torch.no_grad():
        s = float(f(x.unsqueeze(0))[0])
    if not np.array_equal(np.sort(t.candidates), np.sort(e.candidates)) or abs(s - e.score) > 1e-4 * max(1, abs(s)):
        raise RuntimeError(f"re-built score {s} (candidates {t.candidates}) is not the explained {e.score} "
                           f"({e.candidates})")
    return f


def difference_curves(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, x0: torch.Tensor,
                      relevance: np.ndarray, valid: np.ndarray, steps: int = STEPS, batch: int = 8) -> dict:
    """Deletion and insertion curves of (f − f(x0)) / (f(x) − f(x0)) (pixels ranked by `relevance`, most first; padding
    never ranked) and their trapezoid AUCs."""
    order = ranking(relevance, valid)
    with torch.no_grad():
        s, s0 = float(f(x.unsqueeze(0))[0]), float(f(x0.unsqueeze(0))[0])
        out = {}
        for mode in ("deletion", "insertion"):
            imgs = perturbation_batch(x, x0, order, mode, steps)
            vals = torch.cat([f(imgs[i:i + batch]).double() for i in range(0, len(imgs), batch)])
            curve = ((vals - s0) / (s - s0)).numpy()
            out[mode], out[f"{mode}_auc"] = curve.tolist(), auc(curve)
    return out


def run_task(task: str, imgsz: int, image_path: Path, boxes: int, ig_steps: int, batch: int, seed: int) -> dict:
    """Per target of `task` and per box of its random model on `image_path`: each method's deletion and insertion AUC
    (black and blur metric references) and completeness error; plus the mean ± std over boxes (`summary`)."""
    yaml, targets = TASKS[task]
    ex = relprop.Explainer(random_model(yaml), imgsz)
    g = ex.graph
    array = read_image(image_path)
    lb, x, x0, x_blur, valid = image_inputs(array, g.imgsz, g.dtype, g.device)
    chosen = [b for b, _ in best_candidate_boxes(g, array, boxes)]
    rows = {target: box_rows(ex, array, chosen, target, x, x0, x_blur, lb, valid, ig_steps, batch, seed, task)
            for target in targets}
    return {"model": yaml, "image": image_path.name, "imgsz": imgsz, "targets": rows}


def box_rows(ex: relprop.Explainer, array: np.ndarray, chosen: list, target: str, x: torch.Tensor, x0: torch.Tensor,
             x_blur: torch.Tensor, lb: Letterbox, valid: np.ndarray, ig_steps: int, batch: int, seed: int,
             task: str) -> dict:
    """The records and summary of one target over the boxes `chosen` (original pixels)."""
    iou, records = 0.5, []
    for e in ex.explain_boxes(array, chosen, target=target, iou=iou):
        f = target_score(ex, e, x, lb, iou)
        maps, totals = {}, {}
        for key, call in (
                ("relprop", lambda: ex.explain_box(array, e.box, target=target, iou=iou)),
                ("relprop_blur", lambda: ex.explain_box(array, e.box, target=target, iou=iou, baseline="blur")),
                ("grad_x_input", lambda: fm.gradient_x_input(f, x, x0)),
                ("integrated_gradients", lambda: fm.integrated_gradients(f, x, x0, steps=ig_steps))):
            out = call()
            if isinstance(out, relprop.Explanation):
                maps[key] = out.input_relevance.sum(0).numpy()
                totals[key] = (out.delta + out.score - out.reference_score, out.score, out.reference_score)
            else:
                maps[key] = out[0].sum(0).numpy()
                with torch.no_grad():
                    totals[key] = (out[1], float(f(x.unsqueeze(0))[0]), float(f(x0.unsqueeze(0))[0]))
        maps["random"] = np.random.default_rng(seed + len(records)).random(ex.graph.imgsz)
        metrics = {}
        for key in METHODS:
            m = {}
            for ref_name, ref in (("black", x0), ("blur", x_blur)):
                c = difference_curves(f, x, ref, maps[key], valid, batch=batch)
                m[f"deletion_{ref_name}"], m[f"insertion_{ref_name}"] = c["deletion_auc"], c["insertion_auc"]
            if key in totals:
                m["completeness_error"] = completeness_error(*totals[key])
            metrics[key] = m
        records.append({"box": np.round(e.box, 2).tolist(), "candidates": len(e.candidates), "score": e.score,
                        "metrics": metrics})
        print(f"  {task} {target} box {len(records) - 1}: " + ", ".join(
            f"{k} del {metrics[k]['deletion_black']:.3f} ins {metrics[k]['insertion_black']:.3f}" for k in METHODS),
              flush=True)
    return {"boxes": len(records), "records": records, "summary": summarise(records)}


def summarise(records: list[dict]) -> dict:
    """Mean ± std over boxes of each measure of each method."""
    out = {}
    for key in METHODS:
        row = {}
        for field in ("deletion_black", "insertion_black", "deletion_blur", "insertion_blur", "completeness_error"):
            vals = [r["metrics"][key][field] for r in records if field in r["metrics"][key]]
            if vals:
                row[field] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}
        out[key] = row
    return out


def table(result: dict) -> list[str]:
    """The markdown table of one target's summary (`run_task(...)["targets"][target]`)."""
    def cell(c):
        return "–" if not c else f"{c['mean']:.3f} ± {c['std']:.3f}"

    lines = ["| method | deletion AUC ↓ (black) | insertion AUC ↑ (black) | deletion AUC ↓ (blur) | insertion AUC ↑ (blur) "
             "| completeness error |", "|---|---|---|---|---|---|"]
    for key in METHODS:
        s = result["summary"].get(key, {})
        ce = s.get("completeness_error")
        lines.append(f"| {LABELS[key]} | {cell(s.get('deletion_black'))} | {cell(s.get('insertion_black'))} | "
                     f"{cell(s.get('deletion_blur'))} | {cell(s.get('insertion_blur'))} | "
                     f"{'–' if not ce else format(ce['mean'], '.2e')} |")
    return lines


def sections(result: dict) -> list[str]:
    """The markdown sections of the pose and OBB rows present in a faithfulness result, with how to read them."""
    lines = []
    for key in [k for k in TASKS if k in result]:
        r = result[key]
        for target, rows in r["targets"].items():
            lines += [f"## {r['model']} with random weights (BatchNorm recalibrated), target {target}, {r['image']} at "
                      f"{r['imgsz']}, its best raw candidates as boxes ({rows['boxes']} boxes)", "", *table(rows), ""]
    if lines:
        lines += ["Score: the explained target on the matched candidates (class: the class probability; pose keypoints: "
                  "x, y and visibility of every keypoint; OBB box: x, y, w, h and angle), rebuilt from the target's "
                  "weights and checked equal to the Explanation's score.  Deletion/insertion: the image pixels "
                  "(letterbox padding excluded) ranked by the map, 5 % steps, replaced by / revealed from the metric "
                  "reference x0 (black: the image content black; blur: Gaussian blur σ = max(H,W)/20).  A coordinate "
                  "does not fall to 0 when pixels are deleted, so the curves are (f − f(x0)) / (f(x) − f(x0)) (1 → 0 "
                  "deleting, 0 → 1 inserting), not the detect tables' score ÷ score of the image.  The random ranking "
                  "scatters the changed pixels over the image, which moves a random-weight model's scores in its own "
                  "way: it is a reference row, not a floor.  With random weights these rows show that every method "
                  "runs on pose and OBB targets and how complete its map is (completeness error |Σ R − (f(x) − "
                  "f(x0))| / |f(x) − f(x0)| against the method's own reference: blur for relprop (blur ref.), black for the "
                  "others); trained weights are needed to rank the methods' "
                  "faithfulness.", ""]
    return lines
