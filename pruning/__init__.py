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
  networkx graph whose connected components are the units removed together), `importance` (the criterion
  interface and registry), `plans`, `surgery`, `blocks` and `depth` (residual blocks found from the graph and
  their removal), `checkpoint`, `errors`, and `policy` (what is YOLO-specific:
  protected head outputs, scopes, module attributes to resync), handed to coupling and surgery as callbacks.
  The engine imports fxgraph only: neither the criteria nor the job.
- `pruning.criteria`: magnitude, random, DetDSHAP (imports relprop), Taylor, HSIC-Lasso, calibration data,
  distributed scoring.  Imports the engine, never the job.
- `pruning.job`: the workflow around the engine (pipeline, compare, settings, reports, measuring, synthetic data,
  ultralytics trainers, the CLI).  May import everything; ultralytics's trainers are imported only when the job
  is used (the names below that live there are loaded on first access).

`api` is the facade over engine and criteria (names such as "l1" resolve through the registry); `pruners` binds
a criterion and its data into an object for in-memory use (`MagnitudePruner(norm=1).prune(model, ratio=0.3)`);
`pruning.Pruner` (in job) is the whole workflow as an object to run or subclass.
"""

from __future__ import annotations

from typing import Any

from . import criteria  # registers the built-in criteria by name
from .api import Pruned, Report, analyze, dry_run, plan, plan_for_target, prune
from .blocks import ResidualBlock, find_blocks
from .checkpoint import save_checkpoint
from .coupling import Coupling, Group, Touch, Unit
from .criteria import CRITERIA, Criterion, Magnitude, RandomCriterion, get_criterion
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
from .importance import GroupwiseScores
from .plans import Plan, check_plan, make_plan
from .pruners import CriterionPruner, DetDSHAPPruner, HsicLassoPruner, MagnitudePruner

_JOB = {  # name -> module of pruning.job that defines it; imported on first access (ultralytics trainers)
    "finetune": "train", "trainer_for": "train", "PrunedDetectionTrainer": "train",
    "PrunedSegmentationTrainer": "train", "Pruner": "pipeline", "Settings": "config", "load_config": "config",
}


def __getattr__(name: str) -> Any:
    if name in _JOB:
        import importlib

        return getattr(importlib.import_module(f".job.{_JOB[name]}", __name__), name)
    raise AttributeError(f"module 'pruning' has no attribute {name!r}")


__all__ = [
    "BlockError", "ResidualBlock", "find_blocks", "CRITERIA", "Coupling", "Criterion", "CriterionPruner", "DetDSHAPPruner", "EmptyLayerError", "GroupwiseScores",
    "HsicLassoPruner", "MagnitudePruner", "Group", "Magnitude", "OutputError", "OverwriteError", "Plan",
    "PlanError", "ProtectedChannelError", "Pruned", "PruningError", "RandomCriterion", "RatioError", "Report",
    "SplitConstraintError", "StalePlanError", "Touch", "Unit", "UnknownLayerError", "analyze", "check_plan",
    "dry_run", "get_criterion", "make_plan", "plan", "plan_for_target", "prune", "save_checkpoint", *_JOB,
]
