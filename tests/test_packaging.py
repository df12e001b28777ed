"""What a fresh install needs: every module the code imports is declared in setup.cfg, and the console command runs."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fxgraph", "relprop", "pruning")
# the project's own top-level modules: its packages, prune.py, and every script of benchmarks/ and tests/ (which
# import each other by name), read from the tree so that a new benchmark needs no entry here
LOCAL = {*PACKAGES, "tests", "benchmarks", "prune",
         *(p.stem for folder in ("benchmarks", "tests") for p in (REPO / folder).glob("*.py"))}
# import name -> distribution, for modules that may not be installed where the test runs (the `compare` extra)
KNOWN = {"cv2": "opencv-python", "yaml": "pyyaml", "PIL": "pillow", "pytorch_grad_cam": "grad-cam",
         "torch_pruning": "torch-pruning", "captum": "captum", "shap": "shap", "onnxruntime": "onnxruntime"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(block: str) -> set[str]:
    return {_norm(re.split(r"[<>=!~; \[]", line.strip(), maxsplit=1)[0]) for line in block.splitlines() if line.strip()}


def declared() -> dict[str, set[str]]:
    """'install' and each extra -> the distribution names setup.cfg declares."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = {"install": _requirement_names(cfg["options"]["install_requires"])}
    for extra, block in cfg["options.extras_require"].items():
        out[extra] = _requirement_names(block)
    return out


def imported_modules(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level module -> the files importing it (absolute imports only; stdlib and local modules left out)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
                    found.setdefault(top, set()).add(path.name)
    return found


def distribution_of(module: str) -> str:
    dists = importlib.metadata.packages_distributions().get(module)
    return _norm(dists[0]) if dists else _norm(KNOWN.get(module, module))


def _py(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py"))


def undeclared(paths: list[Path], allowed: set[str]) -> dict[str, set[str]]:
    return {m: files for m, files in imported_modules(paths).items() if distribution_of(m) not in allowed}


def test_every_module_the_package_imports_is_an_install_requirement():
    deps = declared()
    missing = undeclared(_py(*PACKAGES) + [REPO / "prune.py"], deps["install"])
    assert not missing, f"imported by the package but not in install_requires: {missing}"


def test_every_module_the_tests_import_is_installed_by_the_test_extra():
    deps = declared()
    # the tests that need the docs tools (test_notebook, test_docs) skip without them; .ci/run installs that extra
    missing = undeclared(_py("tests"), deps["install"] | deps["test"] | deps["docs"])
    assert not missing, f"imported by the tests but in neither install_requires nor the test/docs extra: {missing}"


def test_every_module_the_benchmarks_import_is_declared_somewhere():
    deps = declared()
    missing = undeclared(_py("benchmarks"), set().union(*deps.values()))
    assert not missing, f"imported by benchmarks/ but declared nowhere in setup.cfg: {missing}"


def test_the_check_itself_catches_an_undeclared_import(tmp_path):
    (tmp_path / "mod.py").write_text("import scipy.optimize\nimport networkx as nx\nimport json\nfrom . import sib\n")
    assert set(imported_modules([tmp_path / "mod.py"])) == {"scipy", "networkx"}
    assert set(undeclared([tmp_path / "mod.py"], {"networkx"})) == {"scipy"}
    assert distribution_of("cv2") == "opencv-python" and distribution_of("yaml") == "pyyaml"


def _console(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from pruning.job.console import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_console_help_lists_every_subcommand():
    res = _console("--help")
    assert res.returncode == 0, res.stderr
    for command in ("summary", "explain", "prune", "score", "compare"):
        assert f"  {command}" in res.stdout


@pytest.mark.parametrize("command, expected", [("summary", "--imgsz"), ("explain", "--baseline"),
                                               ("prune", "--pretrained"), ("score", "--out"),
                                               ("compare", "--cfg")])
def test_each_subcommand_help_exits_0(command, expected):
    res = _console(command, "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert expected in res.stdout


def test_unknown_subcommand_exits_2_with_one_line():
    res = _console("predict")
    assert res.returncode == 2 and "unknown command 'predict'" in res.stderr and "Traceback" not in res.stderr


def test_key_value_options_become_flags_for_summary_and_explain():
    from pruning.job.console import as_options

    assert as_options(["best.pt", "imgsz=320", "fold_bn=true", "dot=g.dot", "x=false"]) == [
        "best.pt", "--imgsz", "320", "--fold-bn", "--dot", "g.dot"]
    assert as_options(["--box", "1,2,3,4", "runs/a=b.jpg"]) == ["--box", "1,2,3,4", "runs/a=b.jpg"]
