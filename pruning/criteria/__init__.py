"""pruning.criteria: what decides which filters go.  Each criterion scores every unit of every channel group.

- data-free: `Magnitude` (`l1`, `l2`), `RandomCriterion` (`random`, a control);
- data-driven, on calibration batches (`Calibration`): `DetDSHAP` (Σ |DeepSHAP relevance|, the paper),
  `Taylor` (|activation × gradient| of ultralytics's loss), `HSIC` (HSIC-Lasso, solver in `hsic_lasso`);
- `registry`: the one registry by name (options, whether data is needed, how each is built), read by the
  settings, the job, the CLI, the pruners and `pruning.plan(criterion=...)`;
- `distributed`: the same scores sharded over torchrun processes and all-reduced.

Owns the criteria; imports the engine's interface (pruning.criterion, coupling) and, for DetDSHAP, relprop.
Must not import the job layer (pruning.job).
"""

from typing import Any

from ..criterion import Criterion, Precomputed, Scores, criterion_name, get_criterion
from .calibration import Calibration, load_calibration
from .detdshap import DetDSHAP
from .hsic import HSIC
from .magnitude import Magnitude, RandomCriterion
from .registry import (REGISTRY, CriterionSpec, build_criterion, criterion_names, criterion_spec, make_criterion,
                       register_criterion)
from .taylor import Taylor


def __getattr__(name: str) -> Any:
    if name in ("CRITERIA", "register"):  # deprecated; they warn
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Calibration", "Criterion", "CriterionSpec", "DetDSHAP", "HSIC", "Magnitude", "Precomputed",
           "REGISTRY", "RandomCriterion", "Scores", "Taylor", "build_criterion", "criterion_name", "criterion_names",
           "criterion_spec", "get_criterion", "load_calibration", "make_criterion", "register_criterion"]
