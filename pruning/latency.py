"""Deployment latency: batch 1 at the deployment image size, warmed up, repeats interleaved across the models compared.

Interleaving (A, B, A, B, ... with the order rotated every round) makes a slow spell of a shared machine hit every
model alike, so ratios from one call are honest; the minimum is the stable figure, the median shows the spread.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from .errors import PruningError

RUNTIMES = ("onnxruntime", "torch")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LatencyOptions:
    """How latency is measured: runtime, device and dtype (torch), threads (onnxruntime CPU), image size, warm-up,
    repeats.  `dtype="float16"` runs the torch model and input in half precision, as deployed on a GPU.
    `cuda_graph=True` (torch on CUDA) captures the forward once and times its replay: no per-kernel launch cost, as
    in deployment runtimes that capture or fuse (TensorRT), so the time left is the GPU's own work.  `batch` > 1 times
    a batch of images (throughput serving); deployment on a drone is batch 1."""

    imgsz: int = 640
    runtime: str = "onnxruntime"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    warmup: int = 2
    repeats: int = 8
    cuda_graph: bool = False
    batch: int = 1
    clock: Callable[[], float] = field(default=time.perf_counter, compare=False, repr=False)

    def conditions(self) -> str:
        """The conditions in words, for reports."""
        where = (f"CPU, {self.threads} thread(s)" if self.runtime == "onnxruntime"
                 else f"device {self.device}, {self.dtype}" + (", CUDA graph replay" if self.cuda_graph else ""))
        return (f"{self.runtime} on {where}, batch {self.batch} at {self.imgsz}x{self.imgsz}, {self.warmup} warm-up runs, "
                f"{self.repeats} interleaved repeats")


@dataclass(frozen=True)
class Latency:
    """Minimum and median wall time (ms) of one forward, and every timed run."""

    min_ms: float
    median_ms: float
    runs_ms: tuple[float, ...]


def _torch_runner(model: nn.Module, opts: LatencyOptions) -> Callable[[], None]:
    device, dtype = torch.device(opts.device), getattr(torch, opts.dtype)
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    x = torch.rand(opts.batch, 3, opts.imgsz, opts.imgsz, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if opts.cuda_graph:
        return _captured(net, x)

    def run() -> None:
        with torch.inference_mode():
            net(x)
        sync()
    return run


def _captured(net: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """The forward captured as one CUDA graph (after warm-up on a side stream, as torch.cuda.graphs asks); each run
    replays it and synchronises."""
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # lazy state (anchors, cuDNN plans) is made before the capture
                net(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = net(x)
    held = (net, x, out)  # the graph reads and writes these tensors' memory: they live as long as `run`

    def run() -> None:
        assert held
        graph.replay()
        torch.cuda.synchronize()
    return run


def _onnx_runner(model: nn.Module, opts: LatencyOptions) -> Callable[[], None]:
    import onnxruntime as ort  # an install requirement; imported here so `import pruning` stays light
    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.rand(opts.batch, 3, opts.imgsz, opts.imgsz)
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["images"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = opts.threads
    session = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    return lambda: session.run(None, feed)


def measure_latency(models: Sequence[nn.Module], options: LatencyOptions = LatencyOptions()) -> list[Latency]:
    """Latency of each of `models` (never modified), measured interleaved under `options`; one Latency per model."""
    if options.runtime not in RUNTIMES:
        raise PruningError(f"latency runtime must be one of {', '.join(RUNTIMES)}; got {options.runtime!r}")
    if options.dtype not in DTYPES:
        raise PruningError(f"latency dtype must be one of {', '.join(DTYPES)}; got {options.dtype!r}")
    if options.runtime == "onnxruntime" and options.dtype != "float32":
        raise PruningError(f"latency dtype {options.dtype!r} needs runtime='torch'; onnxruntime runs float32 here")
    if options.cuda_graph and (options.runtime != "torch" or torch.device(options.device).type != "cuda"):
        raise PruningError("latency cuda_graph=True needs runtime='torch' on a CUDA device; got "
                           f"runtime={options.runtime!r}, device={options.device!r}")
    if options.batch < 1:
        raise PruningError(f"latency batch must be at least 1; got {options.batch}")
    if options.repeats < 1 or options.warmup < 0:
        raise PruningError(f"latency needs repeats >= 1 and warmup >= 0; got {options.repeats}, {options.warmup}")
    make = _onnx_runner if options.runtime == "onnxruntime" else _torch_runner
    runners = [make(m, options) for m in models]
    for run in runners:
        for _ in range(options.warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    n = len(runners)
    for r in range(options.repeats):
        for k in range(n):
            i = (r + k) % n  # rotate the order so no model always runs first
            t0 = options.clock()
            runners[i]()
            times[i].append(1000 * (options.clock() - t0))
    return [Latency(min(t), statistics.median(t), tuple(t)) for t in times]
