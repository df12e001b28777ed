"""`python -m pruning ...`: the pipeline's command line (pruning.job.cli)."""

import sys

from .job.cli import main

if __name__ == "__main__":
    sys.exit(main())
