"""Shared fixtures: offline ultralytics, cached traces and models so each model is exported once per session."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

import functools  # noqa: E402
import textwrap  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import fxgraph  # noqa: E402

if TYPE_CHECKING:
    import relprop


def randomize_batchnorm(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm random affine parameters and statistics (a fresh one is the identity), so that cutting
    a live channel changes the outputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def zero_units(modules, coupling, remove: dict[str, tuple[int, ...]]) -> None:
    """Make the chosen units of a pruning Coupling contribute exactly nothing in each of `modules`: zero their
    filters, biases and BN gamma and beta (a channel after BN is beta when gamma is 0, so both must go)."""
    from pruning.coupling import NORM, OUT

    for module in modules:
        params = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        with torch.no_grad():
            for name, units in remove.items():
                for u in units:
                    for t in coupling.groups[name].units[u].touches:
                        if t.role in (OUT, NORM):
                            params[t.param].select(t.dim, t.index).zero_()


def completeness_ok(ex: relprop.Explanation, tol: float) -> bool:
    return abs(ex.delta) <= tol * max(1.0, abs(ex.score - ex.reference_score))

HIDE_PROJECT = textwrap.dedent(
    """
    import os, sys
    os.environ["YOLO_OFFLINE"] = "1"
    PROJECT = ("pruning", "fxgraph", "relprop")
    repo = os.path.realpath(sys.argv[REPO_ARG])


    class HideProject:  # an editable install maps our packages through a finder, not sys.path: refuse them

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in PROJECT:
                raise ModuleNotFoundError(f"{name} is hidden in this process", name=name)
            return None


    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo]
    sys.meta_path.insert(0, HideProject())
    """
)


def hide_project(repo_arg: int) -> str:
    """The start of a fresh-process script that cannot import this project (our repository, named by
    `sys.argv[repo_arg]`, leaves sys.path and a meta-path finder refuses our packages): checkpoints must load
    without us."""
    return HIDE_PROJECT.replace("REPO_ARG", str(repo_arg))



def random_model(yaml: str):
    """A random-weight model whose outputs depend on the image: a fresh init's signal dies out layer by layer, so
    BatchNorm statistics are recalibrated on random images (what one batch of training would do)."""
    torch.manual_seed(0)
    model = fxgraph.load_ultralytics(yaml)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64))
    return model.eval()


def e2e_ready_model(yaml: str):
    """`yaml` built with seed 0, for export checks.  YOLO26 (a one2one head): a fresh init's class scores all tie at
    the prior, so the end-to-end top-k picks any of them; recalibrated BN (image-dependent outputs) and random class
    biases make the selection unique, and its raw ltrb box outputs (reg_max = 1) are made small and positive (random
    ones reach 5e4 px, where float32 rounding alone exceeds the 1e-4 ONNX tolerance).  Other families: the plain
    init."""
    torch.manual_seed(0)
    model = fxgraph.load_ultralytics(yaml)
    if getattr(model.model[-1], "one2one_cv3", None) is None:
        return model
    model = random_model(yaml)
    head = model.model[-1]
    with torch.no_grad():
        for convs in (*head.cv3, *head.one2one_cv3):
            convs[-1].bias.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(1))
    positive_ltrb(model, 1e-3)
    return model


def positive_ltrb(model, weight_scale: float) -> None:
    """A reg_max = 1 head (YOLO26) outputs raw ltrb distances, which random weights make negative (x2 < x1, a box
    no candidate matches): its last box convs (both branches) get weights × `weight_scale` and bias 0.5, so the
    distances are small and positive.  Other heads are left alone."""
    head = model.model[-1]
    if head.reg_max != 1:
        return
    with torch.no_grad():
        for convs in (*head.cv2, *(getattr(head, "one2one_cv2", None) or ())):
            convs[-1].weight.mul_(weight_scale)
            convs[-1].bias.fill_(0.5)


@functools.lru_cache(maxsize=None)
def cached_model(name: str | None):
    """The ultralytics model for a yaml name (None: the embedded YOLOv8s), built once; do not mutate it."""
    torch.manual_seed(0)
    return fxgraph.load_ultralytics(name)


@functools.lru_cache(maxsize=None)
def cached_trace(name: str | None, imgsz: int, fold_bn: bool = False) -> fxgraph.FlatGraph:
    """The float32 FlatGraph of `cached_model(name)` at `imgsz`, traced once per session; do not mutate it."""
    return fxgraph.trace(cached_model(name), imgsz=imgsz, fold_bn=fold_bn)


@pytest.fixture
def yolov8n_320() -> fxgraph.FlatGraph:
    return cached_trace("yolov8n.yaml", 320)
