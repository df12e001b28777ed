"""Deprecated: the old name of `pruning.job.metrics` (a report row's numbers, mAP), kept for one release."""

import sys
import warnings

from . import metrics

warnings.warn("pruning.job.measure is deprecated; import pruning.job.metrics (latency: pruning.latency)",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = metrics
