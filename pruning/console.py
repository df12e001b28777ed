"""`detdshap`: the one console command of the three packages (fxgraph, relprop, pruning), the way ultralytics users
type `yolo predict ...`; it lives in pruning, the only package that may import the other two.

    detdshap summary [WEIGHTS] [--imgsz N] ...        = python -m fxgraph summary ...
    detdshap explain [WEIGHTS] [IMAGE] [--box ...]    = python -m relprop explain ...
    detdshap prune [--pretrained W] [key=value ...]   = python -m pruning ...
    detdshap score --pretrained W [key=value ...]     = python -m pruning score ...
    detdshap compare [key=value ...]                  = python -m pruning compare ...

`summary` and `explain` also take their options as key=value (`detdshap explain imgsz=320 baseline=blur`), the
spelling of the pruning settings and of ultralytics.  Bad input prints one line `error: ...` and exits with 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

COMMANDS = {
    "summary": "trace a model into its flat fx graph and print one row per layer (python -m fxgraph summary)",
    "explain": "DeepSHAP relevance of boxes: PNGs and explanations.json (python -m relprop explain)",
    "prune": "the pruning job: train, score, prune, fine-tune, report, export (python -m pruning)",
    "score": "score every filter with the configured criterion, torchrun-able (python -m pruning score)",
    "compare": "prune with several criteria at equal cost and tabulate (python -m pruning compare)",
}


def as_options(args: Sequence[str]) -> list[str]:
    """`key=value` -> `--key value` (`_` as `-`; `flag=true` -> `--flag`, `flag=false` dropped); rest unchanged."""
    out: list[str] = []
    for a in args:
        key, eq, value = a.partition("=")
        if not eq or a.startswith("-") or "/" in key or "." in key:
            out.append(a)
            continue
        flag = "--" + key.replace("_", "-")
        if value.lower() == "true":
            out.append(flag)
        elif value.lower() != "false":
            out += [flag, value]
    return out


def _runner(command: str) -> Callable[[list[str]], int]:
    if command == "summary":
        from fxgraph.__main__ import main as fx_main

        return lambda args: fx_main(["summary", *as_options(args)])
    if command == "explain":
        from relprop.cli import main as rp_main

        return lambda args: rp_main(["explain", *as_options(args)])
    from .job.cli import main as pruning_main

    sub = "run" if command == "prune" else command
    return lambda args: pruning_main([sub, *args], prog=f"detdshap {command}")


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return (f"usage: detdshap COMMAND [ARGS ...]\n\nExplain and prune ultralytics YOLO with DeepSHAP relevance.\n\n"
            f"commands:\n{rows}\n\n`detdshap COMMAND --help` lists a command's arguments.")


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command's CLI; returns its exit status (2 for an unknown command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"detdshap: error: unknown command '{command}'; use one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    import fxgraph
    import relprop

    from .errors import PruningError

    try:
        return int(_runner(command)(rest) or 0)
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except (fxgraph.FxGraphError, relprop.RelpropError, PruningError, OSError) as exc:  # each CLI catches its own
        print(f"detdshap {command}: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
