"""The documentation: the site builds strictly, and its command-line page names every option and setting."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorials" / "explain_and_prune.ipynb"


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page() -> str:
    """The command-line page as the site shows it: the hand-written part with the generated reference in place."""
    text = (ROOT / "docs" / "command-line.md").read_text()
    h = hooks()
    assert h.MARKER in text
    return h.on_page_markdown(text, None, None, None)


def _fxgraph_parser() -> argparse.ArgumentParser:
    """fxgraph builds its parser inside main(): catch it at parse time."""
    from fxgraph.__main__ import main

    caught = []

    class Caught(Exception):
        pass

    def grab(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(Caught):
            main(["summary"])
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught[0]


def parsers() -> dict[str, argparse.ArgumentParser]:
    from pruning.job.cli import _parser
    from relprop.cli import build_parser

    return {"python -m fxgraph summary": _fxgraph_parser(), "python -m relprop explain": build_parser(),
            "python -m pruning": _parser()}


def test_every_cli_option_appears_in_the_command_line_page(page):
    h = hooks()
    for command, parser in parsers().items():
        options = h._parser_options(parser)
        assert options, command
        section = page.split(f"### `{command}`", 1)[1].split("\n### ", 1)[0]
        missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section))
        assert not missing, f"{command}: options missing from its section of the command-line page: {missing}"


def test_every_detdshap_subcommand_appears_in_the_command_line_page(page):
    from pruning.console import COMMANDS

    section = page.split("### `detdshap`", 1)[1]
    assert all(re.search(rf"\b{name}\b", section) for name in COMMANDS)


def test_every_setting_appears_in_the_command_line_page_with_its_default(page):
    from pruning.job.config import DEFAULT_CFG, KEYS

    defaults = yaml.safe_load(Path(DEFAULT_CFG).read_text())
    for key in set(KEYS) | set(defaults):
        row = re.search(rf"^\| `{key}` \| (.*?) \|", page, re.M)
        assert row, f"setting {key} is missing from the command-line page"
        if key in defaults:
            shown = row.group(1).strip("` ")
            assert yaml.safe_load(shown) == defaults[key], (key, shown)


def test_the_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings")),
                    reason="mkdocs, mkdocs-material or mkdocstrings is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    cli = (tmp_path / "site" / "command-line" / "index.html").read_text()
    assert "--compare-ultralytics" in cli and "latency_repeats" in cli  # the generated reference is in the site
    assert "measure_latency" in (tmp_path / "site" / "api" / "index.html").read_text()  # mkdocstrings ran
    assert (tmp_path / "site" / "results" / "explain_bus" / "01_Normal.png").is_file()


def test_the_readme_test_command_is_the_one_ci_runs_and_the_readme_stays_short():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if "python -m pytest" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert any(b.startswith("pip install -e . && ") and "python -m pruning" in b for b in blocks)
    assert len(readme.splitlines()) <= 160
