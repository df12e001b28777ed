"""Deprecated: the old name of `pruning.criterion` (the criterion interface; it holds no importance measure).

Kept for one release.  `CRITERIA` and `register` now live in the one registry, `pruning.criteria.registry`
(`REGISTRY`, `register_criterion`).
"""

from __future__ import annotations

import warnings
from typing import Any

from .criterion import (Criterion, GroupwiseScores, Precomputed, Scores, check_scores, criterion_name,  # noqa: F401
                        get_criterion)

warnings.warn("pruning.importance is deprecated; import pruning.criterion (the interface) or pruning.criteria "
              "(the criteria and their registry)", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    if name in ("CRITERIA", "register"):
        from .criteria import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'pruning.importance' has no attribute {name!r}")
