"""pruning.criteria: what decides which filters go.  Each criterion scores every unit of every channel group.

- data-free: `Magnitude` (`l1`, `l2`), `RandomCriterion` (`random`, a control);
- data-driven, on calibration batches (`Calibration`): `DetDSHAP` (Σ |DeepSHAP relevance|, the paper),
  `Taylor` (|activation × gradient| of ultralytics's loss), `HSIC` (HSIC-Lasso, solver in `hsic_lasso`);
- `distributed`: the same scores sharded over torchrun processes and all-reduced.

Owns the criteria; imports the engine's interface (pruning.importance, coupling) and, for DetDSHAP, relprop.
Must not import the job layer (pruning.job).  The data-free criteria register themselves by name here.
"""

from ..importance import CRITERIA, Criterion, Precomputed, Scores, criterion_name, get_criterion, register
from .calibration import Calibration, load_calibration
from .detdshap import DetDSHAP
from .hsic import HSIC
from .magnitude import Magnitude, RandomCriterion
from .taylor import Taylor

register("l1", lambda: Magnitude(1))
register("l2", lambda: Magnitude(2))
register("random", RandomCriterion)

__all__ = ["CRITERIA", "Calibration", "Criterion", "DetDSHAP", "HSIC", "Magnitude", "Precomputed", "RandomCriterion",
           "Scores", "Taylor", "criterion_name", "get_criterion", "load_calibration", "register"]
