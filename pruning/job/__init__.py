"""pruning.job: the workflow around the pruning engine, the way users run it.

`pipeline` (train → score → prune → fine-tune → report → ONNX, resumable), `compare` (criteria at equal cost),
`config` (default.yaml + key=value settings), `report`, `measure` (the one place mAP is computed;
latency: `pruning.measure`),
`synthetic` (the offline shapes dataset), `train` (ultralytics trainers that keep a pruned architecture),
`workspace` (run directories, datasets, trace cache, fine-tuning glue shared by all of them), `preflight` (the
inputs checked before a run directory exists), `runlock` (one process per run), `resume` (a resume keeps the
run's settings) and `cli`.

May import the engine, the criteria, relprop and ultralytics.  Nothing outside the job imports it.
"""
