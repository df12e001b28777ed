"""One direction of import: fxgraph ← relprop ← pruning; inside pruning, engine ← criteria ← job.

Read from the source with `ast` (relative imports resolved), so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = ("pruning.coupling", "pruning.criterion", "pruning.plans", "pruning.surgery", "pruning.checkpoint",
          "pruning.errors", "pruning.policy", "pruning.latency", "pruning.blocks", "pruning.depth")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import statement in `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if not node.module and node.level:  # `from . import x`: x is a module of the package
                out += [(f"{target}.{n}", []) for n in names]
            else:
                out.append((target, names))
    return out


def files(package: str) -> list[Path]:
    return sorted((REPO / package.replace(".", "/")).rglob("*.py"))


def offending(sources: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{module_name(p)} imports {m}" for p in sources for m, _ in imports(p)
            if any(m == f or m.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("package, forbidden", [
    ("fxgraph", ("relprop", "pruning")),
    ("relprop", ("pruning",)),
    ("pruning.criteria", ("pruning.job",)),
])
def test_package_does_not_import_a_layer_above_it(package, forbidden):
    assert offending(files(package), forbidden) == []


def source_files(module: str) -> list[Path]:
    """The file of a module, or every file of a package."""
    path = REPO / module.replace(".", "/")
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def test_pruning_engine_imports_neither_criteria_nor_job():
    engine = [p for m in ENGINE for p in source_files(m)]
    assert all(p.is_file() for p in engine), [str(p) for p in engine if not p.is_file()]
    assert offending(engine, ("pruning.criteria", "pruning.job", "relprop")) == []


def module_file(module: str) -> Path | None:
    path = REPO / module.replace(".", "/")
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable(module: str) -> set[str]:
    """Every module of the three packages that `module` imports, directly or through others (any import statement,
    nested in a function or under TYPE_CHECKING included), by name as imported."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None:
            continue
        for target, names in imports(path):
            found = [target] + [f"{target}.{n}" for n in names if module_file(f"{target}.{n}") is not None]
            for name in found:
                if name.split(".")[0] in ("fxgraph", "relprop", "pruning") and name not in seen:
                    seen.add(name)
                    todo.append(name)
    return seen


def test_no_module_imports_another_modules_private_names():
    bad = [f"{module_name(p)}: from {m} import {n}" for pkg in ("fxgraph", "relprop", "pruning") for p in files(pkg)
           for m, names in imports(p) for n in names
           if n.startswith("_") and not n.startswith("__") and m.split(".")[0] in ("fxgraph", "relprop", "pruning")]
    assert bad == []


def test_the_check_sees_relative_and_nested_imports(tmp_path, monkeypatch):
    fake = REPO / "pruning" / "plans.py"
    tree = imports(fake)
    assert any(m == "pruning.criterion" for m, _ in tree)  # `from .importance import ...` resolved
    job = imports(REPO / "pruning" / "job" / "pipeline.py")
    assert any(m == "pruning.api" for m, _ in job)  # `from .. import api`
    assert offending([REPO / "pruning" / "job" / "pipeline.py"], ("pruning.api",))  # would be caught


def test_import_pruning_does_not_import_ultralytics_trainers():
    import subprocess
    import sys

    code = ("import sys, pruning; bad = [m for m in sys.modules if m.startswith('ultralytics.models') or "
            "m.startswith('pruning.job')]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-1000:]


JOB_MACHINERY = ("pruning.job.workspace", "pruning.job.train", "pruning.job.finetuning", "pruning.job.pipeline",
                 "pruning.job.compare", "pruning.job.datasets", "pruning.job.cli")


def test_settings_import_no_job_machinery_and_nothing_that_imports_them_back():
    """The settings read their choices from the registries; they never import the job's machinery (the old
    config -> workspace -> config cycle, which made validating settings import ultralytics's trainers)."""
    deps = reachable("pruning.job.config")
    assert "pruning.job.config" not in deps  # no cycle back to the settings
    assert sorted(m for m in deps if m.startswith(JOB_MACHINERY)) == []
    assert "pruning.criteria.registry" in deps  # the criterion choices (the check can see the import)
    assert {"pruning.job.config", "pruning.job.train"} <= reachable("pruning.job.pipeline")  # and would catch one


def test_validating_settings_does_not_import_ultralytics_trainers():
    import subprocess
    import sys

    code = ("import sys; from pruning.job.config import load_config; load_config(None, ['criterion=l1']); "
            "bad = [m for m in sys.modules if m.startswith(('ultralytics.models', 'ultralytics.engine.trainer')) "
            f"or m in {JOB_MACHINERY!r}]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-1000:]
