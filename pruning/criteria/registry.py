"""The one registry of criteria by name: what each is called, its options, whether it needs calibration data and
how it is built from them.  The settings' choices, the job, the CLI, the criterion-bound pruners and
`pruning.plan(criterion="l1")` all read it, as Torch-Pruning keeps one `Importance` hierarchy.

    register_criterion("mine", lambda calibration, scale=1.0: Mine(calibration(), scale),
                       needs_data=True, options={"scale": "mine_scale"}, summary="my criterion")

`options` maps each keyword the builder takes to the job setting it is read from (`build_criterion`); a pruner
passes them by keyword (`CriterionPruner("mine", data=..., options={"scale": 2.0})`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..criterion import Criterion, use_names
from ..errors import PlanError
from .calibration import Calibration
from .detdshap import DetDSHAP
from .hsic import HSIC
from .magnitude import Magnitude, RandomCriterion
from .taylor import Taylor

CalibrationSource = Callable[[], Calibration]  # returns the calibration batches; called only by data criteria


@dataclass(frozen=True)
class CriterionSpec:
    """A registered criterion: `build(calibration, **options)` makes it (`calibration` is a CalibrationSource,
    None for a data-free criterion); `options` maps each keyword to the job setting that supplies it."""

    name: str
    build: Callable[..., Criterion]
    needs_data: bool
    options: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""


REGISTRY: dict[str, CriterionSpec] = {}


def register_criterion(name: str, build: Callable[..., Criterion], *, needs_data: bool,
                       options: Mapping[str, str] | None = None, summary: str = "") -> CriterionSpec:
    """Register (or replace) the criterion `name`; returns its spec."""
    spec = CriterionSpec(name, build, needs_data, dict(options or {}), summary)
    REGISTRY[name] = spec
    return spec


def criterion_names() -> tuple[str, ...]:
    """Every registered criterion, in registration order."""
    return tuple(REGISTRY)


def known_criteria() -> str:
    """The registered criteria for a message, saying which need calibration data."""
    free = [n for n, s in REGISTRY.items() if not s.needs_data]
    data = [n for n, s in REGISTRY.items() if s.needs_data]
    return f"{', '.join(free)} (data-free); {', '.join(data)} (need calibration data)"


def criterion_spec(name: str) -> CriterionSpec:
    """The spec registered as `name`; PlanError listing every criterion otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise PlanError(f"unknown criterion {name!r}; known criteria: {known_criteria()}; or give a callable "
                        "criterion(graph, coupling)") from None


def make_criterion(name: str, calibration: CalibrationSource | None = None, **options: Any) -> Criterion:
    """The criterion `name` with `options` (keywords of its spec); `calibration` is called only if it needs data."""
    spec = criterion_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise PlanError(f"criterion {name!r} takes no option {', '.join(unknown)}; its options: "
                        f"{', '.join(spec.options) or 'none'}")
    if spec.needs_data and calibration is None:
        raise PlanError(f"criterion {name!r} needs calibration data: use pruning.CriterionPruner({name!r}, "
                        "data='data.yaml') or a pruner class with data=, or the job (python -m pruning)")
    return spec.build(calibration, **options)


def build_criterion(name: str, settings: Any, calibration: CalibrationSource | None) -> Criterion:
    """The criterion `name` with its options read from the job's `settings` (any object with those attributes)."""
    spec = criterion_spec(name)
    return make_criterion(name, calibration, **{kw: getattr(settings, key) for kw, key in spec.options.items()})


def named_data_free(name: str) -> Criterion:
    """A criterion by name for `pruning.plan(criterion=...)`, which has no calibration data to give."""
    spec = criterion_spec(name)
    if spec.needs_data:
        raise PlanError(f"criterion {name!r} needs calibration data, which pruning.plan has none of; data-free "
                        f"criteria: {', '.join(n for n, s in REGISTRY.items() if not s.needs_data)}; for {name!r} "
                        f"use pruning.CriterionPruner({name!r}, data='data.yaml') (known criteria: {known_criteria()})")
    return spec.build(None)


use_names(named_data_free)

register_criterion("detdshap", lambda calib, **o: DetDSHAP(calib(), **o), needs_data=True,
                   options={"boxes": "calib_boxes", "iou": "iou", "baseline": "baseline", "target": "calib_target",
                            "batch": "calib_batch", "chunk": "calib_chunk"},
                   summary="Σ |DeepSHAP relevance| of each filter over the calibration boxes (the paper)")
register_criterion("hsic", lambda calib, **o: HSIC(calib(), **o), needs_data=True, options={"lam": "hsic_lambda"},
                   summary="HSIC-Lasso per group: the λ at which a filter enters its group's Lasso path")
register_criterion("l1", lambda calib: Magnitude(1), needs_data=False, summary="L1 norm of each filter")
register_criterion("l2", lambda calib: Magnitude(2), needs_data=False, summary="L2 norm of each filter")
register_criterion("taylor", lambda calib: Taylor(calib()), needs_data=True,
                   summary="|activation × gradient| of ultralytics's training loss")
register_criterion("random", lambda calib, **o: RandomCriterion(**o), needs_data=False, options={"seed": "seed"},
                   summary="random scores (a control)")


def __getattr__(name: str) -> Any:
    """Deprecated names of the registries this one replaced (one release)."""
    if name == "CRITERIA":
        warnings.warn("CRITERIA is deprecated; read pruning.criteria.REGISTRY (every criterion, with needs_data)",
                      DeprecationWarning, stacklevel=2)
        return {n: (lambda n=n: named_data_free(n)) for n, s in REGISTRY.items() if not s.needs_data}
    if name == "register":
        warnings.warn("register(name, factory) is deprecated; use register_criterion(name, build, needs_data=...)",
                      DeprecationWarning, stacklevel=2)
        return lambda n, factory: register_criterion(n, lambda calib: factory(), needs_data=False)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
