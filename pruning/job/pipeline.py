"""The relevance-guided pruning job (the paper's Algorithm 2 around ultralytics training) as an object, `PruningJob`:

load (or train) → validate → repeat { score filters, plan `step_ratio` of the remaining, prune, fine-tune,
validate } until `target` of params/GFLOPs/latency is removed, the task's quality metric (metrics.primary: box or
pose mAP50-95, top-1) drops more than `max_map_drop`, or `max_steps`
→ final fine-tune → export ONNX → report.

Each stage is a method a subclass may override; `run()` calls them in that order.  Everything goes into a run
directory: every step's checkpoint, `state.json` (what `resume` continues from; it records each finished stage
and the method that ran it), `report.json`, `report.md`, `trend.png`, and `run.lock` (held while a process works
there).  The input weights are only ever read; inputs are checked before the run directory exists.

    from pruning import PruningJob
    PruningJob(pretrained="best.pt", cfg="default.yaml", criterion="l1", epochs_per_step=5).run()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

import fxgraph

from .. import api
from ..criteria import Precomputed, build_criterion
from ..criterion import Scores
from ..depth_plan import score_with_blocks, step_blocks
from ..plans import Plan
from ..devices import torch_device
from .config import Settings, load_config
from .blind import warn_if_blind
from .preflight import check_inputs
from .report import removed_fraction, write_report
from .resume import check_same_settings, read_state
from .runlock import LOCK_NAME, RunLock, describe
from .datasets import dataset, lazy_calibration
from .export import export_onnx
from .finetuning import finetune_to, initial_weights, train_to
from .metrics import measure, primary, primary_metric
from .rundir import log, relative_to, run_dir, save_state
from .timing import check_reachable, latency_step_plan
from .tracecache import traced

STAGES = ("load", "pretrain", "score", "plan", "prune", "finetune", "validate", "export", "report")


class PruningJob:
    """The pruning workflow: build from `pretrained=`, `cfg=` (a yaml path or a dict) and keyword overrides named
    as in default.yaml (validated as the CLI validates them: a bad key or value raises `ConfigError` naming it);
    `run()` returns the run directory.

    Subclass and override a stage to change the workflow, e.g. the fine-tuning schedule:

        class LongLastStep(PruningJob):
            def finetune(self, weights, step, epochs):
                return super().finetune(weights, step, 3 * epochs if step == "final" else epochs)
    """

    def __init__(self, pretrained: str | Path | None = None, cfg: str | Path | Mapping[str, Any] | None = None,
                 **overrides: Any) -> None:
        if pretrained is not None:
            overrides["pretrained"] = str(pretrained)
        self.settings: Settings = load_config(cfg, overrides)
        self.out: Path | None = None
        self.data: Path | None = None
        self.state: dict[str, Any] = {}
        self._calibration = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "PruningJob":
        """A PruningJob for already validated settings (what the CLI builds)."""
        return cls(cfg=settings.to_dict())

    # --- the stages -------------------------------------------------------------------------------------------
    def load(self) -> Path:
        """Step 0's checkpoint in the run directory (`weights/step0.pt`): a copy of `pretrained` when
        `pretrain_epochs` is 0, otherwise what `pretrain` returns.  The input weights are only read."""
        s = self.settings
        if not s.trains_first:
            return initial_weights(s, self.data, self.out, self.weights_dir)
        return self.pretrain(str(s.pretrained or s.model), s.pretrain_epochs)

    def pretrain(self, source: str, epochs: int) -> Path:
        """Train `source` (weights or a model yaml) for `epochs` on the data; returns `weights/step0.pt`."""
        return train_to(source, self.settings, self.data, self.out, epochs, self.weights_dir / "step0.pt")

    def score(self, graph: fxgraph.FlatGraph, step: int) -> Scores:
        """Score every unit of every channel group of `graph` with `criterion` (higher = keep)."""
        criterion = build_criterion(self.settings.criterion, self.settings, self.calibration)
        if self.settings.prune_depth != "never":  # block scores from the same pass (pruning.depth_plan)
            return score_with_blocks(graph, api.analyze(graph), criterion, self.settings.scope)
        return criterion(graph, api.analyze(graph))

    def plan(self, graph: fxgraph.FlatGraph, scores: Scores, step: int) -> Plan:
        """Which units step `step` removes: `step_ratio` of the remaining filters in `scope` by global ranking of
        `scores`, or every unit scoring <= `prune_threshold` when that is set.  With target_metric=latency, a step
        that reaches the target takes only the channel ratio that brings the measured latency to it (bisected)."""
        s = self.settings
        if s.target_metric == "latency" and s.prune_threshold is None:
            return latency_step_plan(graph, Precomputed(scores, s.criterion), s,
                                     self.state["rows"][-1].get("speedup", 1.0))
        blocks = step_blocks(graph, scores, s.step_ratio, s.scope) if s.prune_depth != "never" else None
        only = s.prune_depth == "only"
        return api.plan(graph, ratio=0.0 if only else None if s.prune_threshold is not None else s.step_ratio,
                        threshold=None if only else s.prune_threshold, scope=s.scope,
                        criterion=Precomputed(scores, s.criterion), min_channels=s.min_channels, round_to=s.round_to,
                        blocks=blocks)

    def prune(self, graph: fxgraph.FlatGraph, step_plan: Plan, step: int) -> Path:
        """Cut `step_plan` from the model; returns the pruned checkpoint `weights/step{k}-pruned.pt`."""
        pruned = api.prune(graph, step_plan)
        log(f"step {step} ({self.settings.criterion}): {pruned.report}")
        return pruned.save(self.weights_dir / f"step{step}-pruned.pt", overwrite=True, half=False)

    def finetune(self, weights: Path, step: int | str, epochs: int) -> Path:
        """Fine-tune `weights` for `epochs` with the trainer that keeps the pruned architecture; returns
        `weights/step{k}.pt` (or `weights/final.pt`).  With 0 epochs, `weights` itself."""
        if epochs == 0:
            return weights
        name = "final" if step == "final" else f"step{step}"
        return finetune_to(weights, self.settings, self.data, self.out, name, epochs, self.weights_dir / f"{name}.pt")

    def validate(self, weights: Path, step: int | str, criterion: str) -> dict[str, Any]:
        """One report row for `weights`: params, GFLOPs (at `imgsz`), latency (at `latency_imgsz`) and the speed-up
        against step 0, and the task's validation metrics (box mAP50/mAP50-95, recall, F1; pose mAP; top-1/5)."""
        reference = None if step == 0 else self.weights_dir / "step0.pt"
        row = measure(weights, self.settings, self.data, self.out, step, criterion, reference=reference)
        blind = None if row.get("task") == "classify" else (  # a classifier always names a class: never blind
            warn_if_blind(row, weights, self.calibration().batches, self.settings.device))
        if blind is not None:  # a model that detects nothing on its calibration images: log, warnings, report.md
            log(f"warning: {blind}")
        return row

    def export(self, weights: Path) -> str | None:
        """Export the final weights (`export=onnx`); returns the exported file, or None for `export=none`."""
        if self.settings.export == "none":
            return None
        return export_onnx(weights, self.settings, self.weights_dir)

    def report(self) -> None:
        """Write report.json, report.md and trend.png for the rows so far."""
        write_report(self.out, self.state["rows"], self.settings.to_dict())

    # --- the workflow -----------------------------------------------------------------------------------------
    @property
    def weights_dir(self) -> Path:
        return self.out / "weights"

    def calibration(self):
        """The calibration batches, read on first use (only the data-driven criteria need them)."""
        if self._calibration is None:
            self._calibration = lazy_calibration(self.settings, self.data, self.state["weights"])
        return self._calibration()

    def _done(self, stage: str, step: int | str) -> None:
        """Record a finished stage and the method that ran it (a subclass's override names its class)."""
        method = getattr(type(self), stage)
        self.state.setdefault("stages", []).append({"stage": stage, "step": step, "by": method.__qualname__})
        save_state(self.out, self.state)

    def run(self) -> Path:
        """Run the whole job (or continue it with `resume=true`); returns the run directory.

        Before anything is written: the inputs are checked (`preflight.check_inputs`) and a resume's settings are
        compared with the stored ones (`resume.check_same_settings`).  The run directory is locked while this
        process works in it (`runlock.RunLock`): a second process on the same run is refused."""
        s = self.settings
        check_inputs(s)
        if not s.resume:  # before any training or writing: latency_imgsz fits the model, a latency target is reachable
            check_reachable(s, s.target if s.target_metric == "latency" and s.target > 0 else None, "latency", s.scope)
        self.out = run_dir(s)  # resume: the existing project/name; else a new numbered folder, all checks passed
        changes = check_same_settings(read_state(self.out)["settings"], s, self.out) if s.resume else []
        with RunLock(self.out) as lock:
            if lock.previous.get("pid") is not None:
                log(f"took over {LOCK_NAME}, last held by {describe(lock.previous)} (that process has ended)")
            return self._run(changes)

    def _run(self, changes: list[str]) -> Path:
        s = self.settings
        torch.manual_seed(s.seed)
        self.weights_dir.mkdir(exist_ok=True)
        self._announce()
        if changes:
            log(f"resume with changed {'; '.join(changes)} (settings that may change on resume)")
        self.data = dataset(s)
        self.state = read_state(self.out) if s.resume else {}
        if not self.state:
            self.state = {"settings": s.to_dict(), "rows": [], "step": 0, "done": False, "stop": None, "stages": []}
            self.state["weights"] = str(self.load())
            self._done("load", 0)
            self.state["rows"].append(self.validate(Path(self.state["weights"]), 0, "-"))
            self._done("validate", 0)
            self.report()
        elif self.state.get("done"):
            log(f"{self.out} is finished already ({self.state['stop']}); nothing to resume")
            return self.out
        else:
            log(f"resuming {self.out} after step {self.state['step']}")
        while self.state["stop"] is None:
            weights = self._step(self.state["step"] + 1)
            if weights is None:
                break
        self._finish()
        return self.out

    def _stop_reason(self) -> str | None:
        s, rows = self.settings, self.state["rows"]
        base, last = rows[0], rows[-1]
        removed = removed_fraction(last, base, s.target_metric)
        if removed >= s.target:
            return f"target reached: {removed:.1%} of {s.target_metric} removed"
        if primary(base) - primary(last) > s.max_map_drop:  # the task's quality metric (metrics.primary)
            return (f"{primary_metric(last.get('task')).label} fell {primary(base) - primary(last):.3f} below "
                    f"the start")
        if self.state["step"] >= s.max_steps:
            return f"max_steps={s.max_steps} reached"
        return None

    def _step(self, k: int) -> Path | None:
        """Step k: score, plan, prune, fine-tune, validate; None (with state['stop'] set) when the job stops."""
        s = self.settings
        stop = self._stop_reason()
        graph = None
        if stop is None:
            graph = traced(self.state["weights"], s.imgsz, torch_device(s.device))  # score and prune on the device
            scores = self.score(graph, k)
            self._done("score", k)
            step_plan = self.plan(graph, scores, k)
            self._done("plan", k)
            if step_plan.num_removed == 0:
                stop = (f"no filter in scope scores <= prune_threshold={s.prune_threshold}"
                        if s.prune_threshold is not None else "nothing left to prune in scope")
        if stop is not None:
            self.state["stop"] = stop
            log(f"pruning stops: {stop}")
            save_state(self.out, self.state)
            return None
        weights = self.prune(graph, step_plan, k)
        self._done("prune", k)
        weights = self.finetune(weights, k, s.epochs_per_step)
        self._done("finetune", k)
        self.state["rows"].append(self.validate(weights, k, s.criterion))
        self.state["step"], self.state["weights"] = k, str(weights)
        self._done("validate", k)
        self.report()
        return weights

    def _finish(self) -> None:
        s = self.settings
        final = Path(self.state["weights"])
        if s.final_epochs > 0 and self.state["step"] > 0:
            final = self.finetune(final, "final", s.final_epochs)
            self._done("finetune", "final")
            self.state["rows"].append(self.validate(final, "final", s.criterion))
            self._done("validate", "final")
        self.state["final"] = str(final)
        exported = self.export(final)
        if exported is not None:
            self.state["onnx"] = relative_to(exported, self.out)
            log(f"exported {relative_to(exported, self.out)} (input {s.imgsz}x{s.imgsz})")
        self._done("export", "final")
        self.state["done"] = True
        self.report()
        self._done("report", "final")

    def _announce(self) -> None:
        """The start-up summary: model, data, the steps planned, and where the run goes."""
        s = self.settings
        if s.pretrained is not None:
            model = f"{s.pretrained}" + (f", trained {s.pretrain_epochs} more epochs first" if s.pretrain_epochs else "")
        else:
            model = f"{s.model}, trained {s.pretrain_epochs} epochs from its yaml first"
        how = (f"every filter scoring <= {s.prune_threshold}" if s.prune_threshold is not None
               else f"{s.step_ratio:.0%} of the remaining filters")
        blocks = f"{s.step_ratio:.0%} of the removable residual blocks (at least one)"
        how = {"auto": f"{how} and {blocks}", "only": blocks}.get(s.prune_depth, how)
        log(f"model: {model}")
        log(f"data: {s.data or 'the offline synthetic shapes dataset'} at {s.imgsz} px")
        log(f"plan: up to {s.max_steps} step(s) of {s.criterion} in scope {s.scope}, each removing {how}, until "
            f"{s.target:.0%} of {s.target_metric} is removed or the task's metric (box mAP50-95; pose: keypoint "
            "mAP50-95; classify: top-1) "
            f"falls {s.max_map_drop} below the start; "
            f"{s.epochs_per_step} fine-tuning epoch(s) per step, {s.final_epochs} final; export {s.export}")
        log(f"run directory: {self.out}" + (" (resume)" if s.resume else ""))


def run(settings: Settings | Mapping[str, Any]) -> Path:
    """Run the job for `settings` (a Settings, or a dict of settings validated here); returns the run directory."""
    if not isinstance(settings, Settings):
        settings = load_config(dict(settings))
    return PruningJob.from_settings(settings).run()


def __getattr__(name: str) -> Any:
    if name == "Pruner":  # the workflow's old name, kept for one release
        import warnings

        warnings.warn("pruning.job.pipeline.Pruner is deprecated; use PruningJob (pruning.PruningJob)",
                      DeprecationWarning, stacklevel=2)
        return PruningJob
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
