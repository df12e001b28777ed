"""MkDocs hooks: the command-line reference is generated from the parsers at build time, and the figures of
`benchmarks/results/` are served from where they are (not copied into docs/).

Generating the reference when the site is built (instead of committing a generated page) means a flag or setting
added to any parser or to default.yaml appears in the site without anyone regenerating a file;
tests/test_docs.py checks the generated text against the parsers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cli-reference -->"
FIGURES = ("benchmarks/results",)  # served as results/... in the site


def _help(main: Callable[[list[str]], object], argv: list[str]) -> str:
    """What `main(argv)` prints for --help (argparse exits after printing), at a fixed width."""
    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"
    try:
        with contextlib.redirect_stdout(out):
            try:
                main(argv)
            except SystemExit:
                pass
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip()


def commands() -> list[tuple[str, str]]:
    """(command line, its --help text) for every command line of the project."""
    from fxgraph.__main__ import main as fxgraph_main
    from pruning.job.cli import main as pruning_main
    from pruning.console import main as console_main
    from relprop.cli import main as relprop_main

    return [
        ("python -m fxgraph summary", _help(fxgraph_main, ["summary", "--help"])),
        ("python -m relprop explain", _help(relprop_main, ["explain", "--help"])),
        ("python -m pruning", _help(pruning_main, ["--help"])),
        ("detdshap", _help(console_main, ["--help"])),
    ]


def settings() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """default.yaml as (section, [(key, default, comment), ...]), in the file's order; keys of
    `pruning.job.config.Settings` that the file lacks come last, so none is missing."""
    from pruning.job.config import DEFAULT_CFG, KEYS

    sections: list[tuple[str, list[tuple[str, str, str]]]] = [("", [])]
    seen = set()
    for line in Path(DEFAULT_CFG).read_text().splitlines():
        head = re.match(r"#\s*---\s*(.*?)\s*---", line)
        if head:
            sections.append((head.group(1), []))
            continue
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*):\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if m:
            key, value, comment = m.group(1), m.group(2), m.group(3) or ""
            sections[-1][1].append((key, value, comment))
            seen.add(key)
    missing = [(k, "", "(no default in default.yaml)") for k in KEYS if k not in seen]
    if missing:
        sections.append(("other settings", missing))
    return [(s, rows) for s, rows in sections if rows]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cli_reference() -> str:
    """The generated part of docs/command-line.md: each command's --help, then every key=value setting."""
    parts = ["## Every command's options", "",
             "Printed by each command's `--help` when this site was built, so it lists exactly what the parsers "
             "accept.",
             ""]
    for line, text in commands():
        parts += [f"### `{line}`", "", "```text", text, "```", ""]
    parts += ["## Every `key=value` setting", "",
              "The pruning job's settings, from `default.yaml` (the defaults) and `pruning.job.config.Settings`; "
              "`python -m pruning`, `detdshap prune|score|compare` and `pruning.Pruner(...)` take each as "
              "`key=value` or keyword.", ""]
    for section, rows in settings():
        if section:
            parts += [f"### {section}", ""]
        parts += ["| key | default | what it sets |", "|---|---|---|"]
        parts += [f"| `{k}` | `{_cell(v)}` | {_cell(c)} |" if v else f"| `{k}` | | {_cell(c)} |" for k, v, c in rows]
        parts.append("")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown


def on_files(files, config):
    """Serve the figures of benchmarks/results as results/<path> (PNG only: the tables are quoted in the pages)."""
    from mkdocs.structure.files import File

    for folder in FIGURES:
        base = ROOT / folder
        for path in sorted(base.rglob("*.png")):
            files.append(File(str(Path("results") / path.relative_to(base)), str(base.parent), config["site_dir"],
                              config["use_directory_urls"]))
    return files


def _parser_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser and its subparsers (used by the test)."""
    found = set()
    for action in parser._actions:
        found.update(s for s in action.option_strings if s not in ("-h", "--help"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _parser_options(sub)
    return found
