"""CUDA as a device: explanations and pruning agree with the CPU.  Skipped where no GPU is present (CI)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import fxgraph
import pruning
import relprop

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_and_cpu_explanations_agree_in_float64():
    """Black reference, float64: the same box explained on both devices agrees to 1e-9 relative (the max-pool rule
    splits ties equally, so which argmax a device returns no longer matters)."""
    from ultralytics.utils import ASSETS

    model = fxgraph.load_ultralytics(None)
    image = str(ASSETS / "bus.jpg")
    out = {}
    for device in ("cpu", "cuda"):
        ex = relprop.explainer(copy.deepcopy(model), 160, device=device, dtype=torch.float64)
        out[device] = ex.explain(image, iou=0.5, max_det=3)
    assert out["cpu"] and len(out["cpu"]) == len(out["cuda"])
    for a, b in zip(out["cpu"], out["cuda"]):
        ra, rb = a.input_relevance.numpy(), b.input_relevance.numpy()
        assert np.linalg.norm(ra - rb) <= 1e-9 * np.linalg.norm(ra)
        assert abs(a.score - b.score) <= 1e-9 * abs(a.score)


def test_pruning_a_cuda_model_matches_the_cpu():
    """l1 pruning of a graph traced on CUDA (crashed in index_add_) gives the CPU's plan and weights.  One model is
    built and copied to each device: building from the yaml twice draws different random weights (the first H200
    run of this test failed so, not on CUDA)."""
    model = fxgraph.load_ultralytics("yolov8n.yaml")
    results = {}
    for device in ("cpu", "cuda"):
        g = fxgraph.trace(copy.deepcopy(model), 64, device=device)
        results[device] = pruning.prune(g, ratio=0.3, criterion="l1")
    cpu, cuda = results["cpu"], results["cuda"]
    assert cpu.plan.remove == cuda.plan.remove
    sd_cpu, sd_cuda = cpu.graph.module.state_dict(), cuda.graph.module.state_dict()
    assert sd_cpu.keys() == sd_cuda.keys()
    for k in sd_cpu:
        assert sd_cuda[k].device.type == "cuda" or not sd_cuda[k].is_floating_point()
        torch.testing.assert_close(sd_cuda[k].cpu(), sd_cpu[k], rtol=0, atol=0)


def test_captured_latency_replays_the_graph_without_running_python():
    """LatencyOptions(cuda_graph=True) times replays of one capture: the model's Python forward runs only for the
    warm-up and the capture (4 calls), never in the timed repeats, and each replay takes a positive time."""
    from pruning.latency import LatencyOptions, measure_latency

    calls = []
    net = fxgraph.load_ultralytics("yolov8n.yaml").eval()
    net.register_forward_pre_hook(lambda m, args: calls.append(1))
    opts = LatencyOptions(imgsz=64, runtime="torch", device="cuda", dtype="float16", warmup=2, repeats=5,
                          cuda_graph=True)
    other = fxgraph.load_ultralytics("yolov8s.yaml").eval()  # captured before the first is timed (the first
    # H200 run of the suite read freed weights here: the capture's tensors were not kept alive)
    lat, _ = measure_latency([net, other], opts)
    assert len(calls) == 4  # 3 warm-up calls and the capture (the copy shares the hook); replays run no Python
    assert 0 < lat.min_ms <= lat.median_ms and len(lat.runs_ms) == 5
