"""``python -m relprop explain ...`` (see relprop.cli)."""

import sys

from .cli import main

sys.exit(main())
