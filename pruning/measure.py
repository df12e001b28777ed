"""Deprecated: the old name of `pruning.latency` (deployment latency), kept for one release.

`import pruning.measure` gives the `pruning.latency` module itself, so code and tests that patch names on it
patch the real thing.
"""

import sys
import warnings

from . import latency

warnings.warn("pruning.measure is deprecated; import pruning.latency (deployment latency; mAP is in "
              "pruning.job.metrics)", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = latency
