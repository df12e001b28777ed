"""pruning: dependency-aware structured pruning of ultralytics YOLOv8 on the flat fx graph.

    import fxgraph, pruning
    g = fxgraph.trace("best.pt", imgsz=640)
    plan = pruning.plan(g, ratio=0.3, criterion="l2")   # global ranking; or layer_ratios={4: 0.5}, scope="backbone"
    print(pruning.dry_run(g, plan))                      # params / GFLOPs left
    plan, report = pruning.plan_for_target(g, 0.4)       # or: the smallest plan removing 40% of GFLOPs
    pruned = pruning.prune(g, plan)                      # g is not modified
    pruned.save("best-pruned.pt")                        # an ordinary ultralytics checkpoint
    pruning.finetune("best-pruned.pt", data="data.yaml", epochs=50)   # trains the pruned architecture

Channel groups come from pruning.coupling: channel labels propagated through the fx graph, tied in a networkx
graph whose connected components are the units that must be removed together.
"""

from .api import Pruned, Report, analyze, dry_run, plan, plan_for_target, prune
from .checkpoint import save_checkpoint
from .coupling import Coupling, Group, Touch, Unit
from .criteria import CRITERIA, Criterion, Magnitude, RandomCriterion, get_criterion
from .errors import (
    EmptyLayerError,
    OverwriteError,
    PlanError,
    ProtectedChannelError,
    PruningError,
    RatioError,
    SplitConstraintError,
    StalePlanError,
    UnknownLayerError,
)
from .plans import Plan, check_plan, make_plan
from .train import PrunedDetectionTrainer, PrunedSegmentationTrainer, finetune, trainer_for

__all__ = [
    "CRITERIA", "Coupling", "Criterion", "EmptyLayerError", "Group", "Magnitude", "OverwriteError", "Plan",
    "PlanError", "ProtectedChannelError", "Pruned", "PrunedDetectionTrainer", "PrunedSegmentationTrainer", "PruningError", "RandomCriterion", "RatioError", "Report",
    "SplitConstraintError", "StalePlanError", "Touch", "Unit", "UnknownLayerError", "analyze", "check_plan",
    "dry_run", "finetune", "plan_for_target", "get_criterion", "make_plan", "plan", "prune", "save_checkpoint", "trainer_for",
]
