"""pruning: dependency-aware structured pruning of ultralytics YOLO on the flat fx graph.

    import fxgraph, pruning
    g = fxgraph.trace("best.pt", imgsz=640)
    plan = pruning.plan(g, ratio=0.3, criterion="l2")   # global ranking; or layer_ratios={4: 0.5}, scope="backbone"
    print(pruning.dry_run(g, plan))                      # params / GFLOPs left
    plan, report = pruning.plan_for_target(g, 0.4)       # or: the smallest plan removing 40% of GFLOPs
    pruned = pruning.prune(g, plan)                      # g is not modified
    pruned.save("best-pruned.pt")                        # an ordinary ultralytics checkpoint
    pruning.finetune("best-pruned.pt", data="data.yaml", epochs=50)   # trains the pruned architecture

Three layers, one direction of import (tests/test_layers.py enforces it):

- the engine, this package's top-level modules: `coupling` (channel labels through the fx graph, tied in a
  networkx graph whose connected components are the units removed together), `criterion` (the criterion
  interface), `plans`, `surgery`, `blocks` and `depth` (residual blocks found from the graph and their removal),
  `checkpoint`, `errors`, `latency` and `policy` (what is YOLO-specific:
  protected head outputs, scopes, module attributes to resync), handed to coupling and surgery as callbacks.
  The engine imports fxgraph only: neither the criteria nor the job.
- `pruning.criteria`: magnitude, random, DetDSHAP (imports relprop), Taylor, HSIC-Lasso, calibration data,
  distributed scoring, and the one registry of criteria by name (`registry`).  Imports the engine, never the job.
- `pruning.job`: the workflow around the engine (pipeline, compare, settings, reports, measuring, synthetic data,
  ultralytics trainers, the CLI).  May import everything; ultralytics's trainers are imported only when the job
  is used (the names below that live there are loaded on first access).

`api` is the facade over engine and criteria (names such as "l1" resolve through the registry); `pruners` binds
a criterion and its data into an object for in-memory use (`MagnitudePruner(norm=1).prune(model, ratio=0.3)`);
`pruning.PruningJob` (in job) is the whole workflow as an object to run or subclass.  `console` is the
`detdshap` command of all three packages.

Deprecated names, kept for one release (each warns): `pruning.Pruner` (now `PruningJob`), `pruning.CRITERIA`
(now `pruning.criteria.REGISTRY`), `pruning.importance` (now `pruning.criterion`), `pruning.measure` (now
`pruning.latency`), `CriterionPruner.plan` (now `graph_and_plan`).
"""

from __future__ import annotations

from typing import Any

from . import criteria  # registers the built-in criteria by name
from .api import Pruned, Report, analyze, dry_run, plan, plan_for_target, prune
from .blocks import ResidualBlock, find_blocks
from .checkpoint import save_checkpoint
from .coupling import Coupling, Group, Touch, Unit
from .criteria import (REGISTRY, Criterion, CriterionSpec, Magnitude, RandomCriterion, criterion_names,
                       get_criterion, register_criterion)
from .errors import (
    BlockError,
    EmptyLayerError,
    OutputError,
    OverwriteError,
    PlanError,
    ProtectedChannelError,
    PruningError,
    RatioError,
    SplitConstraintError,
    StalePlanError,
    UnknownLayerError,
)
from .criterion import GroupwiseScores
from .plans import Plan, check_plan, make_plan
from .pruners import CriterionPruner, DetDSHAPPruner, HsicLassoPruner, MagnitudePruner

_JOB = {  # name -> module of pruning.job that defines it; imported on first access (ultralytics trainers)
    "finetune": "train", "trainer_for": "train", "PrunedDetectionTrainer": "train",
    "PrunedSegmentationTrainer": "train", "PrunedPoseTrainer": "train", "PrunedOBBTrainer": "train",
    "PrunedClassificationTrainer": "train", "PruningJob": "pipeline", "Settings": "config", "load_config": "config",
}
_DEPRECATED = {"Pruner": "PruningJob", "CRITERIA": "REGISTRY"}  # old name -> new name, for one release


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        import warnings

        warnings.warn(f"pruning.{name} is deprecated; use pruning.{_DEPRECATED[name]}", DeprecationWarning,
                      stacklevel=2)
        if name == "CRITERIA":
            from .criteria import registry

            return {n: (lambda n=n: registry.named_data_free(n)) for n, s in REGISTRY.items() if not s.needs_data}
        return __getattr__(_DEPRECATED[name])
    if name in _JOB:
        import importlib

        return getattr(importlib.import_module(f".job.{_JOB[name]}", __name__), name)
    raise AttributeError(f"module 'pruning' has no attribute {name!r}")


__all__ = [
    "BlockError", "ResidualBlock", "find_blocks", "REGISTRY", "Coupling", "Criterion", "CriterionPruner", "CriterionSpec", "criterion_names", "register_criterion", "DetDSHAPPruner", "EmptyLayerError", "GroupwiseScores",
    "HsicLassoPruner", "MagnitudePruner", "Group", "Magnitude", "OutputError", "OverwriteError", "Plan",
    "PlanError", "ProtectedChannelError", "Pruned", "PruningError", "RandomCriterion", "RatioError", "Report",
    "SplitConstraintError", "StalePlanError", "Touch", "Unit", "UnknownLayerError", "analyze", "check_plan",
    "dry_run", "get_criterion", "make_plan", "plan", "plan_for_target", "prune", "save_checkpoint", *_JOB,
]
