"""Old public names still work for one release and each says, with a DeprecationWarning, what replaced it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# old module -> (its replacement, a name both give)
MODULES = {
    "pruning.importance": ("pruning.criterion", "Precomputed"),
    "pruning.measure": ("pruning.latency", "measure_latency"),
    "pruning.job.measure": ("pruning.job.metrics", "val_metrics"),
    "pruning.job.console": ("pruning.console", "main"),
}


@pytest.mark.parametrize("old", sorted(MODULES))
def test_an_old_module_warns_and_gives_the_new_ones_names(old):
    """In a fresh interpreter: a module warns once, when first imported."""
    new, name = MODULES[old]
    code = (f"import warnings, importlib; warnings.simplefilter('always')\n"
            f"with warnings.catch_warnings(record=True) as w:\n"
            f"    warnings.simplefilter('always'); m = importlib.import_module({old!r})\n"
            f"new = importlib.import_module({new!r})\n"
            f"hits = [x for x in w if issubclass(x.category, DeprecationWarning) and {old!r} in str(x.message)]\n"
            f"assert hits and {new!r} in str(hits[0].message), [str(x.message) for x in w]\n"
            f"assert getattr(m, {name!r}) is getattr(new, {name!r})\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_pruning_pruner_is_the_pruning_job_and_warns():
    import pruning
    from pruning.job.pipeline import PruningJob

    with pytest.warns(DeprecationWarning, match=r"pruning.Pruner is deprecated; use pruning.PruningJob"):
        assert pruning.Pruner is PruningJob


def test_pruning_criteria_dict_is_the_registrys_data_free_criteria_and_warns():
    import pruning

    with pytest.warns(DeprecationWarning, match=r"pruning.CRITERIA is deprecated; use pruning.REGISTRY"):
        old = pruning.CRITERIA
    assert set(old) == {n for n, s in pruning.REGISTRY.items() if not s.needs_data} == {"l1", "l2", "random"}
    assert old["l1"]().p == 1


def test_criterion_pruner_plan_is_graph_and_plan_and_warns():
    import pruning
    from conftest import cached_trace

    g = cached_trace("yolov8n.yaml", 64)
    pruner = pruning.MagnitudePruner(norm=1)
    with pytest.warns(DeprecationWarning, match=r"CriterionPruner.plan is deprecated.*use graph_and_plan"):
        graph, plan = pruner.plan(g, ratio=0.2)
    assert graph is g and plan == pruner.graph_and_plan(g, ratio=0.2)[1]
