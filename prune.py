"""`python prune.py --pretrained WEIGHTS --cfg default.yaml [key=value ...]`: the same as `python -m pruning`."""

import sys

from pruning.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
