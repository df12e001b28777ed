"""One place that turns the job's ultralytics-style `device` setting into a torch device for tracing, scoring and
pruning (training passes the setting to ultralytics as it is)."""

from __future__ import annotations

import os

import torch

from .errors import PruningError


def torch_device(setting: str | int | None, local_rank: int | None = None) -> torch.device:
    """"cpu" → cpu; "0" / 0 / "cuda:0" → that GPU; "0,1" → the GPU of this process's local rank (torchrun: one GPU
    per rank, LOCAL_RANK picks it); None / "" → the first GPU when one is present, else cpu (ultralytics' default)."""
    text = str(setting).strip().lower() if setting is not None else ""
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if text in ("", "none"):
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if text in ("cpu", "mps", "meta"):
        return torch.device(text)
    if text.startswith("cuda"):
        return torch.device(text if ":" in text else f"cuda:{local_rank}")
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if ids and all(i.isdigit() for i in ids):
        return torch.device("cuda", int(ids[local_rank % len(ids)]))
    raise PruningError(f"device {setting!r} is not understood: use cpu, a GPU index like 0, a list like 0,1, or cuda:N")
