"""Interleaved timing for the benchmarks: every function timed in the same rounds, so that a slow spell of a shared
machine hits all of them alike; ratios between them are what the benchmarks report."""

from __future__ import annotations

import time
from typing import Callable

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA kernels (without this a CUDA timing measures launches only)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device | str = "cpu", *,
                warmup: bool = True, rotate: bool = False) -> dict[str, list[float]]:
    """`repeats` rounds of every function (after one untimed call of each if `warmup`; the order rotated each round
    if `rotate`), the device synchronised before and after every timed call: name -> its seconds per round."""
    if warmup:
        for fn in fns.values():
            fn()
    names, times = list(fns), {name: [] for name in fns}
    for i in range(repeats):
        k = i % len(names) if rotate else 0
        for name in names[k:] + names[:k]:
            sync(device)
            t = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times
