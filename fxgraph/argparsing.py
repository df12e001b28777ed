"""argparse with the command lines' one-line rule: a usage error prints `error: <message>` on stderr and exits
with status 2, like every other bad input, instead of argparse's usage block (`--help` still prints it)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (its sub-command parsers are of the same class)."""

    def error(self, message: str) -> NoReturn:
        print("error: " + " ".join(f"{message}; see {self.prog} --help".split()), file=sys.stderr)
        raise SystemExit(2)
