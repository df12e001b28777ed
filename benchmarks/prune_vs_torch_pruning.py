"""Prune YOLOv8n/s/m, YOLO11n/s, YOLO26n, YOLOv10n, YOLO12n, yolo11n-pose and yolo11n-obb with magnitude importance
in `pruning` (ours) and in Torch-Pruning (DepGraph), side by side.

    pip install torch-pruning     # the `compare` extra; never imported by the package itself
    python benchmarks/prune_vs_torch_pruning.py [--models yolov8n yolov8s yolov8m yolo11n yolo11s yolo26n yolov10n
        yolo12n yolo11n-pose yolo11n-obb] [--ratios 0.25 0.5] [--append] [--note "conditions"]

Models are built with random weights from ultralytics's yaml (nothing is downloaded).  Both tools keep the
head's output convs (box/class branches, pose keypoints and the OBB angle (cv4); both branches of a YOLOv10 or
YOLO26 end-to-end head) and the DFL conv where there is one: ours protects them by itself, Torch-Pruning is told to
ignore exactly those layers, the ones the trace marks role=head_output (`head_output_paths`: the same record ours
reads, no per-family list).  Both prune with L2 magnitude and the same ratio
in every layer ("uniform", Torch-Pruning's default local pruning); ours is also run with its global ranking (the
paper's Algorithm 2).  Ours keeps ultralytics's modules as they are (C2f, C3k2, C3k, C2PSA, PSABlock); around an
`Attention` it only shrinks the key dims.

Torch-Pruning cannot cut a C2f's `chunk(2)`.  As in its YOLOv8 example, every C2f is first replaced by a C2f_v2
(two convs instead of one conv + chunk; YOLOv10's C2fCIB, a C2f with CIB blocks, by a C2f_v2 holding its CIBs);
for YOLO11/YOLO26 its users do the same to C3k2 (a C2f subclass), with a C3k2_v2 that keeps the inner blocks
(Bottleneck, C3k, or Bottleneck + PSABlock) and copies the weights (Torch-Pruning issue #522).  As they do, every
ultralytics `Attention` (and YOLO12's area attention `AAttn`, which ours keeps whole too) goes into
`ignored_layers` (issue #386) and C2PSA is left alone (its cv1, `split` in two, stays whole in both tools on
yolo11n and yolo26n: both halves are tied to the attention stream).  The replaced model's outputs are checked equal to
the original's (float64, relative difference < 1e-4) before anything is measured; the replacement is included in its time.

Parameters and GFLOPs (640x640) of both come from fxgraph.stats on a trace of the pruned model (for YOLO26: the
branch ultralytics's predict uses, one2one).  Times: ours = coupling analysis + plan + surgery on an already
traced graph (the trace is the project's shared representation and is reported on its own); theirs =
C2f_v2/C3k2_v2 replacement + DependencyGraph tracing + pruning; each the best of five runs.  "runs": a forward
pass at 640 gives finite outputs of the right shape (ours: and the pruned ultralytics model agrees with the
pruned graph); where Torch-Pruning raises (replacement, pruning, forward pass, or our trace for counting) or the
replacement changes the outputs, the row records the exception's type and first line and the stage instead of
stopping the benchmark.  "keeps_blocks": the pruned model holds the
same ultralytics block types, as many of each, as the original.  `--append` merges the rows into the results
already there by (model, ratio, tool), so that slow models need not be re-run.
Results: benchmarks/results/prune_vs_torch_pruning.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import fxgraph  # noqa: E402
import pruning  # noqa: E402
from fxgraph import stats  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
IMGSZ = 640
REPEATS = 5  # times are the best of this many runs (a shared 2-core machine is noisy)


# ------------------------------------------------------------------------------ Torch-Pruning's workarounds


def c2f_v2_class():
    """Torch-Pruning's YOLOv8 example: C2f with its chunk(2) replaced by two convs (cv0, cv1)."""
    from ultralytics.nn.modules import Bottleneck, Conv

    class C2f_v2(nn.Module):
        def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
            super().__init__()
            self.c = int(c2 * e)
            self.cv0 = Conv(c1, self.c, 1, 1)
            self.cv1 = Conv(c1, self.c, 1, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))

        def forward(self, x):
            y = [self.cv0(x), self.cv1(x)]
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    return C2f_v2


def c3k2_v2_class(C2f_v2):
    """The C3k2 counterpart its YOLO11 users write (Torch-Pruning issue #522: "just replacing the C3K2 with 2
    Conv_layer"): a C2f_v2 whose inner blocks are built as ultralytics's C3k2 builds them (Bottleneck, C3k, or
    Bottleneck + PSABlock when attn)."""
    from ultralytics.nn.modules import Bottleneck
    from ultralytics.nn.modules.block import C3k, PSABlock

    class C3k2_v2(C2f_v2):
        def __init__(self, c1, c2, n=1, c3k=False, e=0.5, attn=False, g=1, shortcut=True):
            super().__init__(c1, c2, n, shortcut, g, e)
            self.m = nn.ModuleList(
                nn.Sequential(Bottleneck(self.c, self.c, shortcut, g),
                              PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)))
                if attn else C3k(self.c, self.c, 2, shortcut, g) if c3k else Bottleneck(self.c, self.c, shortcut, g)
                for _ in range(n)
            )

    return C3k2_v2


def _first_bottleneck(block: nn.Module):
    from ultralytics.nn.modules import Bottleneck

    return next((m for m in block.modules() if isinstance(m, Bottleneck)), None)


def replace_split_blocks(module: nn.Module, C2f_v2, C3k2_v2) -> dict[str, int]:
    """Swap every C2f for a C2f_v2 and every C3k2 for a C3k2_v2 holding the same weights (cv1 split into cv0 and
    cv1; cv2 and the inner blocks `m` are moved over as they are).  Returns {replaced type: count}."""
    from ultralytics.nn.modules import C2f, C3k2
    from ultralytics.nn.modules.block import C3k

    replaced: dict[str, int] = {}
    for name, child in module.named_children():
        # C2f, C3k2, and C2f subclasses that keep C2f's chunk(2) forward (YOLOv10's C2fCIB)
        if not (isinstance(child, C2f) and type(child).forward is C2f.forward):
            for k, v in replace_split_blocks(child, C2f_v2, C3k2_v2).items():
                replaced[k] = replaced.get(k, 0) + v
            continue
        b = _first_bottleneck(child.m[0])  # None for C2fCIB (CIB blocks): its `m` is moved over as it is anyway
        shortcut = b is not None and b.cv1.conv.in_channels == b.cv2.conv.out_channels and getattr(b, "add", False)
        c1, c2, n = child.cv1.conv.in_channels, child.cv2.conv.out_channels, len(child.m)
        e = child.c / c2
        if type(child) is C3k2:
            first = child.m[0]
            new = C3k2_v2(c1, c2, n=n, c3k=isinstance(first, C3k), e=e, attn=isinstance(first, nn.Sequential),
                          g=b.cv2.conv.groups, shortcut=shortcut)
        else:
            new = C2f_v2(c1, c2, n=n, shortcut=shortcut, g=b.cv2.conv.groups if b is not None else 1, e=e)
        new.cv2, new.m = child.cv2, child.m
        half = child.cv1.conv.weight.shape[0] // 2
        with torch.no_grad():
            new.cv0.conv.weight.copy_(child.cv1.conv.weight[:half])
            new.cv1.conv.weight.copy_(child.cv1.conv.weight[half:])
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(new.cv0.bn, key).copy_(getattr(child.cv1.bn, key)[:half])
                getattr(new.cv1.bn, key).copy_(getattr(child.cv1.bn, key)[half:])
        for bn in (new.cv0.bn, new.cv1.bn):  # ultralytics sets eps=1e-3 on its models; a fresh BatchNorm has 1e-5
            bn.eps, bn.momentum = child.cv1.bn.eps, child.cv1.bn.momentum
        for attr in ("f", "i", "type", "np"):  # ultralytics's layer bookkeeping
            if hasattr(child, attr):
                setattr(new, attr, getattr(child, attr))
        setattr(module, name, new)
        replaced[type(child).__name__] = replaced.get(type(child).__name__, 0) + 1
    return replaced


def head_output_paths(model: nn.Module) -> list[str]:
    """Module paths of the layers whose output channels are the model's outputs, as the trace marks them (NodeInfo
    role head_output, set from the model's head at trace time): the last conv of every box/class branch and of what
    the task adds (mask coefficients, pose keypoints, the OBB angle), the DFL conv where there is one, and, for a
    head with an end-to-end copy (YOLOv10, YOLO26), the same convs of both branches (each branch traced once, at a
    small size).  These are what ours protects by itself; Torch-Pruning is told to ignore the same layers."""
    head = model.model[-1]
    branches = ("one2many", "one2one") if getattr(head, "one2one_cv2", None) is not None else (None,)
    stride = int(max(float(s) for s in model.stride))
    paths: dict[str, None] = {}
    for branch in branches:
        graph = fxgraph.trace(model, 2 * stride, branch=branch)
        for node in graph.module.graph.nodes:
            record = fxgraph.info(node)
            if record.is_head_output:
                paths[record.module_path] = None
    return list(paths)


def head_outputs(model: nn.Module, paths: list[str] | None = None) -> list[nn.Module]:
    """The modules of `model` at `paths` (head_output_paths of the model, or of the model it was copied from)."""
    return [model.get_submodule(p) for p in (head_output_paths(model) if paths is None else paths)]


ATTENTION_TYPES = ("Attention", "AAttn")  # multi-head attention (C2PSA, PSA, ...) and YOLO12's area attention


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """ultralytics's attention modules: `Attention` (in C2PSA, YOLOv10's PSA, YOLO26's attn C3k2) and YOLO12's
    `AAttn`: Torch-Pruning's YOLO11 users put them in `ignored_layers` (Torch-Pruning issue #386; its qkv `view`
    into heads and depthwise `pe` are not pruned correctly otherwise); ours keeps AAttn whole too.  C2PSA itself
    (its cv1 `split`) is left as it is, as they leave it."""
    return [m for m in model.modules() if type(m).__name__ in ATTENTION_TYPES]


def prune_theirs(model: nn.Module, ratio: float,
                 head_paths: list[str]) -> tuple[nn.Module, float, float, dict[str, int]]:
    """Torch-Pruning: (pruned model, seconds for the C2f_v2/C3k2_v2 replacement, seconds for DepGraph + pruning,
    the blocks replaced); the layers at `head_paths` (head_output_paths) are ignored."""
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    start = time.perf_counter()
    C2f_v2 = c2f_v2_class()
    replaced = replace_split_blocks(model, C2f_v2, c3k2_v2_class(C2f_v2))
    swapped = time.perf_counter()
    for p in model.parameters():
        p.requires_grad_(True)
    pruner = tp.pruner.MagnitudePruner(
        model, torch.randn(1, 3, IMGSZ, IMGSZ), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=head_outputs(model, head_paths) + attention_layers(model),
        iterative_steps=1,
        output_transform=lambda out: _tensors(out),
    )
    pruner.step()
    done = time.perf_counter()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, swapped - start, done - swapped, replaced


def replacement_error(model: nn.Module) -> float:
    """Largest difference between `model` and its copy with C2f/C3k2 replaced, relative to the largest magnitude
    of each tensor, on one random 320x320 image, both in float64, over the outputs (FlatGraph order, the model's
    default head branch) and the features entering the head: the replacement must not change the function, or
    the comparison would not be fair.  Relative, and over the head's inputs too, because a random-weight model's
    features are tiny and its decoded boxes nearly the anchors: an absolute difference would hide a wrong BN eps
    (1e-5 instead of ultralytics's 1e-3 gives ~3e-8 absolute)."""
    replaced = copy.deepcopy(model)
    C2f_v2 = c2f_v2_class()
    replace_split_blocks(replaced, C2f_v2, c3k2_v2_class(C2f_v2))
    # float64, so that rounding noise (float32 boxes in pixels: ~3e-5) can neither hide nor fake a difference
    original, replaced = copy.deepcopy(model).double().eval(), replaced.double().eval()
    x = torch.rand(1, 3, IMGSZ // 2, IMGSZ // 2, dtype=torch.float64)  # 320: float64 convs are slow on a CPU
    tensors = []
    for m in (original, replaced):
        features: list[torch.Tensor] = []
        hook = m.model[-1].register_forward_pre_hook(lambda _, args: features.extend(args[0]))
        with torch.no_grad():
            tensors.append([*fxgraph.reference_outputs(m, x), *features])
        hook.remove()
    return max(float((a - b).abs().max() / a.abs().max().clamp_min(1e-30)) for a, b in zip(*tensors))


def block_types(model: nn.Module) -> dict[str, int]:
    """{type name: count} of ultralytics's building blocks in `model` (the modules a user's checkpoint and code
    expect: C2f, C3k2, C3k, C2PSA, PSABlock, ...)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if type(m).__module__.startswith("ultralytics.nn.modules.block"):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)] if isinstance(out, (list, tuple)) else []


# ------------------------------------------------------------------------------ measurements


def best_of(run, key):
    """The result of `run()` with the smallest `key` over REPEATS runs, each after a full garbage collection
    (so that neither tool pays for the other's leftovers); the other results are dropped at once."""
    best = None
    for _ in range(REPEATS):
        gc.collect()
        result = run()
        if best is None or key(result) < key(best):
            best = result
        result = None
    return best


def runs(model: nn.Module, rows: int) -> bool:
    """A forward pass at 640 gives finite predictions of the right shape: `rows` per anchor (4 + nc, plus what the
    task adds: keypoints, the angle; the unpruned graph's)."""
    with torch.no_grad():
        pred = fxgraph.reference_outputs(model.eval(), torch.rand(1, 3, IMGSZ, IMGSZ))[0]
    return pred.shape[:2] == (1, rows) and bool(torch.isfinite(pred).all())


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def measure(name: str, ratios: list[float]) -> list[dict]:
    torch.manual_seed(0)
    model = fxgraph.load_ultralytics(f"{name}.yaml")
    t0 = time.perf_counter()
    graph = fxgraph.trace(model, IMGSZ)
    trace_s = time.perf_counter() - t0
    blocks = block_types(model)
    small = torch.rand(1, 3, 2 * graph.facts.stride, 2 * graph.facts.stride)
    with torch.no_grad():  # rows per anchor of the unpruned model's prediction: 4 + nc (+ keypoints, angle)
        pred_rows = fxgraph.reference_outputs(model.eval(), small)[0].shape[1]
    head_paths = head_output_paths(model)
    base = {"model": name, "params_before": stats.num_params(graph), "gflops_before": round(stats.gflops(graph), 3)}
    error, replacement_failure = None, None
    try:  # the replacement must keep the function, or the comparison would not be fair: a row says where not
        error = replacement_error(model)
        if error >= 1e-4:
            replacement_failure = RuntimeError(f"the C2f_v2/C3k2_v2 replacement changes the outputs (relative "
                                               f"{error:.3g})")
    except Exception as exc:
        replacement_failure = exc
    rows = []
    for ratio in ratios:
        for variant, options in (("ours (uniform)", {"global_ranking": False}), ("ours (global)", {})):
            pruned = best_of(lambda: pruning.prune(graph, ratio=ratio, criterion="l2", **options),
                             key=lambda p: p.seconds)
            x = torch.rand(1, 3, IMGSZ, IMGSZ)
            with torch.no_grad():
                agree = max(float((a - b).abs().max()) for a, b in
                            zip(pruned.graph.module(x), fxgraph.reference_outputs(pruned.model, x))) < 1e-3
            rows.append({**base, "ratio": ratio, "tool": variant, "params": stats.num_params(pruned.graph),
                         "gflops": round(stats.gflops(pruned.graph), 3), "seconds": round(pruned.seconds, 3),
                         "trace_seconds": round(trace_s, 2), "runs": agree and runs(pruned.model, pred_rows),
                         "keeps_blocks": block_types(pruned.model) == blocks})
        pruned = None  # free our pruned graphs so that the garbage collector does not walk them during theirs
        row = {"params": None, "gflops": None, "seconds": None, "runs": False, "keeps_blocks": False,
               "replacement_max_rel_diff": error,
               "ignored_layers": {"head_outputs": len(head_paths), "attention": len(attention_layers(model))}}
        stage = "replacement"
        try:  # record a failure in the row rather than hide it or stop the benchmark
            if replacement_failure is not None:
                raise replacement_failure
            stage = "pruning"
            theirs, replace_s, prune_s, replaced = best_of(lambda: prune_theirs(model, ratio, head_paths),
                                                           key=lambda t: t[1] + t[2])
            row.update(seconds=round(replace_s + prune_s, 3), replace_seconds=round(replace_s, 3), replaced=replaced,
                       keeps_blocks=block_types(theirs) == blocks)
            stage = "forward"
            row["runs"] = runs(theirs, pred_rows)
            stage = "trace for counting"
            traced = fxgraph.trace(theirs, IMGSZ)
            row.update(params=stats.num_params(traced), gflops=round(stats.gflops(traced), 3))
        except Exception as exc:
            row.update(runs=False if stage != "trace for counting" else row["runs"], error=_first_line(exc),
                       failed_at=stage)
        rows.append({**base, "ratio": ratio, "tool": "torch-pruning", **row})
        ours = next(r for r in rows if r["ratio"] == ratio and r["tool"] == "ours (uniform)")
        if row["runs"] and row["seconds"]:
            ours["time_ratio_vs_tp"] = round(ours["seconds"] / row["seconds"], 3)
            ours["time_ratio_vs_tp_with_trace"] = round((ours["seconds"] + trace_s) / row["seconds"], 3)
        for r in rows[-3:]:
            print(json.dumps(r), flush=True)
    return rows


def _keeps(r: dict) -> str:
    keeps = r.get("keeps_blocks", r.get("keeps_c2f"))  # rows measured before YOLO11 support: keeps_c2f
    if keeps:
        return "yes"
    swapped = ", ".join(f"{k}→{'C3k2_v2' if k == 'C3k2' else 'C2f_v2'} ×{v}"  # C2f_v2 keeps C2fCIB's own CIBs
                        for k, v in (r.get("replaced") or {}).items())
    return f"no ({swapped})" if swapped else "no"


def _runs(r: dict) -> str:
    if r["runs"]:
        return "yes"
    if r.get("error"):
        where = f" at {r['failed_at']}" if r.get("failed_at") else ""
        return f"no{where}: `{r['error'].replace('|', '/').replace('`', chr(39))}`"
    return "no"


def markdown(rows: list[dict]) -> str:
    head = ("| model | ratio | tool | params | GFLOPs@640 | params left | analysis+surgery s | ours/TP time | runs | "
            "keeps ultralytics blocks |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        left = f"{r['params'] / r['params_before']:.1%}" if r.get("params") else "-"
        params = f"{r['params']:,}" if r.get("params") else "-"
        lines.append(
            f"| {r['model']} | {r['ratio']} | {r['tool']} | {params} | {r['gflops'] or '-'} | {left} | "
            f"{r['seconds'] if r['seconds'] is not None else '-'} | {r.get('time_ratio_vs_tp', '')} | "
            f"{_runs(r)} | {_keeps(r)} |"
        )
    return "\n".join(lines)


def merge(old_rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """`old_rows` with every row of the same (model, ratio, tool) replaced by its new measurement, new ones after."""
    key = lambda r: (r["model"], r["ratio"], r["tool"])  # noqa: E731
    fresh = {key(r): r for r in new_rows}
    merged = [fresh.pop(key(r), r) for r in old_rows]
    return merged + [r for r in new_rows if key(r) in fresh]


def _legacy_runs(data: dict) -> list[dict]:
    """The `runs` list of a results file (older files have one top-level `env` for all their rows)."""
    if "runs" in data:
        return data["runs"]
    models = list(dict.fromkeys(r["model"] for r in data.get("rows", [])))
    return [{"models": models, "env": data.get("env", {}), "note": data.get("note")}] if models else []


def document(data: dict) -> str:
    runs_text = "\n".join(
        f"- models {', '.join(run['models'])}: `{run.get('command') or 'python benchmarks/prune_vs_torch_pruning.py'}` "
        f"— {run['env']}" + (f"\n\n  {run['note']}" if run.get("note") else "") for run in data["runs"])
    return (f"# Pruning YOLO detectors with magnitude (L2): ours vs Torch-Pruning\n\n{runs_text}\n\n"
            f"{markdown(data['rows'])}\n\n"
            f"ours/TP time: analysis+surgery of ours (uniform) over Torch-Pruning's C2f_v2/C3k2_v2 replacement + "
            f"DepGraph + pruning (only where Torch-Pruning's model runs); our trace (fxgraph.trace, shared with "
            f"relprop) is excluded there and listed in the JSON as `trace_seconds` (`time_ratio_vs_tp_with_trace` "
            f"includes it). Times are the best of {REPEATS} runs; on a shared machine they swing (Torch-Pruning's "
            f"DepGraph runs a multi-threaded forward pass at 640 and suffers most from other load), so compare the "
            f"ratio, and re-run on an idle machine before quoting absolute seconds.\n\n"
            f"Torch-Pruning is given, as its users do, C2f_v2/C3k2_v2 in place of C2f/C3k2 (outputs checked equal "
            f"to the original's before pruning, in float64: `replacement_max_rel_diff` in the JSON) and `ignored_layers` = the "
            f"head's output convs (both branches of a YOLO26 head), DFL where present, and every ultralytics "
            f"`Attention`. \"runs\" no with a message: the exception Torch-Pruning's pruning, the pruned model's "
            f"forward pass, or the trace used for counting raised (first line). \"keeps ultralytics blocks\": the "
            f"pruned model holds the same ultralytics block types, as many of each, as the original (rows measured "
            f"before YOLO11 support checked C2f only).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolov8n", "yolov8s", "yolov8m"],
                        help="yolov8n/s/m, yolo11n/s, yolo26n ... (random weights from ultralytics's yaml)")
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.25, 0.5])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true",
                        help="merge into the results already in --out: rows of the same (model, ratio, tool) are "
                             "replaced, the others kept")
    parser.add_argument("--note", default=None, help="measuring conditions to record with this run (put it last: "
                        "the recorded command stops before it)")
    args = parser.parse_args()
    import torch_pruning  # noqa: F401  (fail early where the compare extra is missing)
    import ultralytics

    torch.set_num_threads(max(1, torch.get_num_threads()))
    load_start = round(os.getloadavg()[0], 2)
    rows = [r for name in args.models for r in measure(name, args.ratios)]
    env = {"python": platform.python_version(), "torch": torch.__version__, "ultralytics": ultralytics.__version__,
           "torch_pruning": importlib.metadata.version("torch-pruning"), "cpu_threads": torch.get_num_threads(),
           "machine": platform.machine(), "imgsz": IMGSZ, "load_average_1m_at_start": load_start,
           "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    command = "python benchmarks/prune_vs_torch_pruning.py " + " ".join(sys.argv[1:]).split(" --note")[0]
    run = {"models": args.models, "ratios": args.ratios, "command": command, "env": env, "note": args.note}
    path = args.out / "prune_vs_torch_pruning.json"
    data = {"runs": [run], "rows": rows}
    if args.append and path.exists():
        old = json.loads(path.read_text())
        data = {"runs": _legacy_runs(old) + [run], "rows": merge(old.get("rows", []), rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    (args.out / "prune_vs_torch_pruning.md").write_text(document(data))
    print(markdown(rows))


if __name__ == "__main__":
    main()
