"""Deprecated: the old home of the `detdshap` console command, now `pruning.console`; kept for one release."""

import sys
import warnings

from .. import console

warnings.warn("pruning.job.console is deprecated; import pruning.console", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = console
