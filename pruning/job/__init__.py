"""pruning.job: the workflow around the pruning engine, the way users run it.

`pipeline` (train → score → prune → fine-tune → report → ONNX, resumable), `compare` (criteria at equal cost),
`config` (default.yaml + key=value settings), `report`, `metrics` (a report row's numbers, the one place mAP is
computed), `timing` (the job's latency; the measurement itself is `pruning.latency`), `synthetic` and `trees`
(the offline datasets), `train` (ultralytics trainers that keep a pruned architecture), `finetuning` (the job's
trainer runs: step 0, fine-tuning, best checkpoint), `export`, `datasets` (a run's data yaml and calibration
batches), `tracecache`, `rundir` (run directories, state.json, the log line), `preflight` (the inputs checked
before a run directory exists), `runlock` (one process per run), `resume` (a resume keeps the run's settings)
and `cli`.  The criteria are built by name through `pruning.criteria.registry`; the `detdshap` console command
is `pruning.console`.

May import the engine, the criteria, relprop and ultralytics.  Nothing outside the job imports it.
"""
