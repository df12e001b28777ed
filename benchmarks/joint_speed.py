"""The joint-graph relevance pass (relprop.joint) against the eager pass, a forward and a gradient, in one
interleaved run per model and size.

    python benchmarks/joint_speed.py --models yolov8n --imgsz 64 --threads 1 --repeats 15
    python benchmarks/joint_speed.py --models embedded --imgsz 640 --threads 1 --repeats 5 --out ...

Timed, interleaved (min and median of `repeats` rounds): ultralytics's graph forward; a gradient (forward and backward
of the same graph for one box's target weights: the floor); the relevance pass for that box eager
(`RelevanceGraph.forward(...).backward(w)`), as joint graphs (`JointRelevance.forward(...).backward(w)`, forward graph +
one backward-graph call) and as ONE graph (`JointRelevance.relevance(x, refs, w)`); the same passes for 3 boxes (a
further box costs half the difference); `Explainer.explain(image, box)` eager and with compile="graph"; with
`--backend aot_eager` also the one graph under torch.compile(fullgraph=True).  Counts the ATen ops per box of each.
Writes one JSON (the command, threads and load recorded) and prints one line per row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import relprop  # noqa: E402
from bench_timing import interleaved  # noqa: E402
from explain_speed import RANDOM, model_and_image  # noqa: E402
from random_models import best_candidate_boxes  # noqa: E402
from relprop.engine import RelevanceGraph  # noqa: E402
from relprop.image import Letterbox, read_image, to_input  # noqa: E402
from relprop.joint import JointRelevance, aten_ops  # noqa: E402
from rules_before_after import count_ops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def measure(name: str, imgsz: int, repeats: int, backend: str | None) -> dict:
    model, path = model_and_image(name)
    eager_ex = relprop.Explainer(model, imgsz)
    g = eager_ex.graph
    graph_ex = relprop.Explainer(g, compile="graph")
    image = read_image(path)
    lb = Letterbox.fit(image.shape[:2], g.imgsz)
    x = to_input(image, lb, g.dtype, g.device)
    if name in RANDOM:  # random weights detect nothing: their best candidates as boxes
        picks = best_candidate_boxes(g, image, 3)
        boxes, options = [b for b, _ in picks], {"iou": 0.5}
    else:
        found = eager_ex.explain(path)[:3]
        boxes, options = [f.box for f in found], {"cls": found[0].cls}
    with torch.no_grad():
        pred = eager_ex.engine(x)[0][0]
    opts = relprop.ExplainOptions(iou=options.get("iou", 0.7))
    targets = [eager_ex.match(pred, lb, b, None, opts) for b in boxes]
    w3 = torch.stack([t.weights(eager_ex.layout, pred.shape[0], pred.shape[1], pred.dtype, pred.device)
                      for t in targets])
    w1 = w3[0]
    eager: RelevanceGraph = eager_ex.engine
    joint: JointRelevance = graph_ex.engine
    refs = eager.reference(torch.zeros_like(x))

    def forward():
        with torch.no_grad():
            g.module(x)

    def gradient():
        xg = x.detach().requires_grad_(True)
        y = g.module(xg)
        y = y[0] if isinstance(y, (tuple, list)) else y
        torch.autograd.grad((y.flatten(1) @ w1.flatten()).sum(), xg)

    start = time.perf_counter()
    joint.forward(x, refs).backward(w1)
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    joint.relevance(x, refs, w1)
    joint.relevance(x, refs, w3)
    one_trace_s = time.perf_counter() - start
    fns = {
        "forward": forward,
        "gradient": gradient,
        "eager_pass": lambda: eager.forward(x, refs).backward(w1),
        "joint_pass": lambda: joint.forward(x, refs).backward(w1),
        "one_graph": lambda: joint.relevance(x, refs, w1),
        "eager_pass_3": lambda: eager.forward(x, refs).backward(w3),
        "joint_pass_3": lambda: joint.forward(x, refs).backward(w3),
        "one_graph_3": lambda: joint.relevance(x, refs, w3),
        "eager_explain": lambda: eager_ex.explain(path, boxes[0], **options),
        "graph_explain": lambda: graph_ex.explain(path, boxes[0], **options),
    }
    compile_s = None
    if backend is not None:
        compiled = JointRelevance(eager, backend=backend)
        start = time.perf_counter()
        compiled.relevance(x, refs, w1)
        compile_s = time.perf_counter() - start
        fns[f"one_graph_{backend}"] = lambda: compiled.relevance(x, refs, w1)
    eager_rel, joint_rel = fns["eager_pass"](), fns["one_graph"]()
    diff = float((eager_rel.attribution - joint_rel.attribution).abs().max())
    graphs = joint.graphs(x, refs)
    ops = {"gradient": count_ops(gradient), "eager_pass": count_ops(fns["eager_pass"]),
           "joint_forward_graph": aten_ops(graphs.forward_gm), "joint_backward_graph": aten_ops(graphs.backward_gm),
           "one_graph_1_target": aten_ops(joint.one_graph(x, refs, 1)), "forward": count_ops(forward)}
    t = interleaved(fns, repeats)
    mins = {k: min(v) for k, v in t.items()}
    meds = {k: statistics.median(v) for k, v in t.items()}
    ratios = {}
    for k in fns:
        ratios[f"{k}_over_forward"] = (mins[k] / mins["forward"], meds[k] / meds["forward"])
        ratios[f"{k}_over_gradient"] = (mins[k] / mins["gradient"], meds[k] / meds["gradient"])
    for k in ("eager_pass", "joint_pass", "one_graph"):
        ratios[f"{k}_further_box_over_forward"] = ((mins[f"{k}_3"] - mins[k]) / 2 / mins["forward"],
                                                   (meds[f"{k}_3"] - meds[k]) / 2 / meds["forward"])
    return {"model": name, "imgsz": imgsz, "repeats": repeats, "dtype": str(g.dtype),
            "trace_seconds": trace_s, "one_graph_trace_seconds_1_and_3_targets": one_trace_s,
            f"compile_seconds_{backend}": compile_s, "attribution_max_abs_diff": diff,
            "seconds_min": mins, "seconds_median": meds, "ratios_min_median": ratios, "aten_ops": ops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["yolov8n"])
    ap.add_argument("--imgsz", nargs="+", type=int, default=[64])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default=None, choices=("aot_eager", "inductor"),
                    help="also time the one graph under torch.compile(fullgraph=True) with this backend")
    ap.add_argument("--out", type=Path, default=RESULTS / "joint_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = [os.getloadavg()[0]]
    rows = []
    for name in args.models:
        for imgsz in args.imgsz:
            row = measure(name, imgsz, args.repeats, args.backend)
            rows.append(row)
            r = row["ratios_min_median"]
            show = " ".join(f"{k}={v[0]:.2f}/{v[1]:.2f}" for k, v in r.items()
                            if k.endswith(("pass_over_gradient", "graph_over_gradient", "explain_over_gradient",
                                           "pass_over_forward", "graph_over_forward", "further_box_over_forward",
                                           "gradient_over_forward")) or "aot_eager" in k or "inductor" in k)
            print(f"{name} {imgsz} (min/median): {show}; ATen ops {row['aten_ops']}; "
                  f"max |Δattribution| {row['attribution_max_abs_diff']:.3g}", flush=True)
    load.append(os.getloadavg()[0])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/joint_speed.py " + " ".join(argv or sys.argv[1:]),
                                    "threads": args.threads, "load_before_after": load, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
