"""`python prune.py --pretrained WEIGHTS --cfg default.yaml [key=value ...]`: the same as `python -m pruning`
(a thin wrapper over `pruning.Pruner`)."""

import sys

from pruning.job.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python prune.py"))
