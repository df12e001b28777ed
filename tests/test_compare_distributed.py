"""compare under torchrun: the sweep's rows sharded over ranks (criteria.distributed.shard, the rule scoring uses
too), rank 0 writing the table once every row is cached; the rows equal a single-process sweep's, and a rank that
dies leaves its finished rows for resume=true to complete.  Two gloo ranks on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import compare_fakes
from pruning.criteria.distributed import shard
from pruning.errors import PruningError
from pruning.job import compare as cmp
from pruning.job.config import load_config

REPO = Path(__file__).resolve().parents[1]
TIMINGS = ("latency_ms", "latency_median_ms", "speedup", "speedup_median")  # wall-clock: the only fields two runs may differ in
TINY_YAML = """nc: 4
backbone:
  - [-1, 1, Conv, [8, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, C2f, [16, True]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [16, 3, 2]]
head:
  - [[3, 4, 5], 1, Detect, [nc]]
"""


@given(n=st.integers(0, 40), world=st.integers(1, 8))
def test_shards_are_contiguous_balanced_and_cover_every_item_once(n, world):
    items = list(range(n))
    parts = [shard(items, rank, world) for rank in range(world)]
    assert [i for part in parts for i in part] == items  # in order: gathered results keep single-process order
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [len(p) for p in parts] == sorted((len(p) for p in parts), reverse=True)  # the first ranks take extras


def test_a_rank_outside_the_world_is_refused():
    with pytest.raises(PruningError, match=r"rank 2 is not in a world of 2 process\(es\)"):
        shard([1, 2, 3], 2, 2)


def test_the_sweep_rows_are_sharded_with_a_criterions_targets_together():
    s = load_config(overrides={"compare_criteria": ["l1", "random"], "compare_targets": [0.3, 0.5],
                               "compare_epochs": 1, "compare_seeds": [0]})
    keys = [[r.key for r in shard(cmp.sweep_rows(s), rank, 2)] for rank in range(2)]
    assert keys == [["s0-unpruned", "s0-unpruned-ft", "s0-l1-0.3"], ["s0-l1-0.5", "s0-random-0.3", "s0-random-0.5"]]


def _torchrun(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1",
           "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


DYING = """import os, sys
import compare_fakes
from pruning.job import compare as cmp
from pruning.job.cli import main

compare_fakes.install(setattr)
if os.environ["RANK"] == "1" and "--no-death" not in sys.argv:  # rank 1 dies (no exception, no clean-up) right after caching its first row
    cached_row = cmp.cached_row

    def cache_then_die(out, key, work):
        cached_row(out, key, work)
        os._exit(3)

    cmp.cached_row = cache_then_die
sys.exit(main([a for a in sys.argv[1:] if a != "--no-death"]))
"""


def test_a_rank_that_dies_leaves_its_rows_unwritten_table_and_resume_completes_the_sweep(tmp_path, monkeypatch):
    """Fake per-row work (compare_fakes), real sharding, barrier, cache and resume in two torchrun processes."""
    sweep = {"compare_criteria": ["l1", "random"], "compare_targets": [0.3, 0.5], "compare_epochs": 1,
             "compare_seeds": [0, 1], "device": "cpu", "project": str(tmp_path)}
    (tmp_path / "dying.py").write_text(DYING)
    res = _torchrun(["dying.py", "compare", *[f"{k}={json.dumps(v)}" for k, v in sweep.items()], "name=cut"],
                    tmp_path)
    out = tmp_path / "cut"
    assert res.returncode != 0, res.stdout[-2000:]
    assert "comparison written" not in res.stdout
    assert not any((out / f"compare.{ext}").exists() for ext in ("json", "md", "png"))  # no partial table
    cached = {p.stem: p.stat().st_mtime_ns for p in (out / cmp.ROWS).glob("*.json")}
    assert "s1-unpruned" in cached and "s1-unpruned-ft" not in cached  # rank 1's shard is seed 1: one row done

    calls, _ = compare_fakes.install(monkeypatch.setattr)
    resumed = cmp.compare(load_config(overrides={**sweep, "name": "cut", "resume": True}))
    every = [r.key for r in cmp.sweep_rows(load_config(overrides=sweep))]
    assert calls == [k.replace("unpruned-ft", "ft").replace("-unpruned", "-0") for k in every if k not in cached]
    assert {p.stem: p.stat().st_mtime_ns for p in (out / cmp.ROWS).glob("*.json") if p.stem in cached} == cached
    calls.clear()
    one_go = cmp.compare(load_config(overrides={**sweep, "name": "one-go"}))
    assert json.loads((resumed / "compare.json").read_text())["rows"] == json.loads(
        (one_go / "compare.json").read_text())["rows"]


def _checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, per-epoch training results without their wall-clock `time`) of a checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    results = {k: v for k, v in (ckpt.get("train_results") or {}).items() if k != "time"}
    return (ckpt.get("ema") or ckpt["model"]).float().state_dict(), results


def test_a_sweep_sharded_over_two_ranks_equals_the_single_process_sweep(tmp_path):
    """Real rows (tiny model, 4 images at 64 px, one epoch): pruning, training and validation of each rank alone
    give the single process's numbers exactly (the same ops in the same order with the same seeds), timings aside;
    the fine-tuned weights are equal bit for bit, so ranks trained with the sweep's seed, not one offset by rank."""
    from ultralytics.nn.tasks import DetectionModel

    from pruning.checkpoint import save_checkpoint
    from pruning.job.synthetic import ShapesConfig, make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", ShapesConfig(n_train=4, n_val=2, imgsz=64, seed=1))
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    torch.manual_seed(0)
    weights = save_checkpoint(DetectionModel(str(tmp_path / "tiny.yaml"), nc=4, verbose=False), tmp_path / "w.pt",
                              half=False)
    args = ["compare", f"--pretrained={weights}", f"data={data}", "imgsz=64", "batch=2", "workers=0", "device=cpu",
            "pretrain_epochs=0", "compare_epochs=1", "compare_criteria=[l1,random]", "compare_targets=[0.3]",
            "compare_seeds=[0]", "calib_images=2", "latency_imgsz=64", "latency_repeats=2", "latency_warmup=1",
            f"project={tmp_path / 'runs'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-m", "pruning", *args, "name=single"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(["-m", "pruning", *args, "name=multi"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("comparison written") == 1  # rank 0 only

    runs = tmp_path / "runs"
    single, multi = (json.loads((runs / n / "compare.json").read_text())["rows"] for n in ("single", "multi"))
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]  # noqa: E731
    assert [(r["criterion"], r["target"]) for r in single] == [("unpruned", 0.0), ("unpruned+ft", 0.0),
                                                               ("l1", 0.3), ("random", 0.3)]
    assert strip(multi) == strip(single)
    assert single[2]["params"] != single[3]["params"]  # two criteria, two different cuts
    for tag in ("unpruned-ft", "l1-0.3", "random-0.3"):
        (a, results_a), (b, results_b) = (_checkpoint(runs / n / "weights" / f"s0-{tag}.pt")
                                          for n in ("single", "multi"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), tag
        assert results_a == results_b, tag  # the training losses too
    start, tuned = (_checkpoint(runs / "multi" / "weights" / f"s0-{t}.pt")[0] for t in ("step0", "unpruned-ft"))
    assert not all(torch.equal(start[k], tuned[k]) for k in start)  # the epoch did train: equal is not vacuous


def test_a_refusal_on_rank_0_stops_every_rank_with_its_message(tmp_path):
    """Rank 0 alone opens (or, resuming, checks) and locks the run directory; its refusal is handed to every rank,
    so all of them exit with the same one-line error instead of waiting for rows that will never come."""
    (tmp_path / "dying.py").write_text(DYING)
    res = _torchrun(["dying.py", "--no-death", "compare", "device=cpu", f"project={tmp_path}", "name=never",
                     "resume=true"], tmp_path, timeout=300)
    assert res.returncode != 0
    assert res.stderr.count("error: resume: ") == 2 and "has no rows/ of a compare sweep to continue" in res.stderr
    assert str(REPO / "pruning") not in res.stderr  # one line each, no traceback from our code (torchrun adds its own)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dying.py"]
