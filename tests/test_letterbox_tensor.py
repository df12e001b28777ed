"""An image tensor is letterboxed, and its references built, on its own device (issue 12): the same network input as
the numpy (cv2) path, with no host access (checked on the `meta` device, which has no data to copy, and by recording
the aten ops for a host sync)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relprop.image import (Letterbox, letterbox_tensor, read_image, reference_inputs, tensor_reference_inputs,
                           to_input)

from tests.test_relprop_sync import _Recorder

SHAPES = [(64, 64), (48, 64), (64, 40), (37, 101), (130, 90)]  # as is, pad rows, pad columns, up- and downscale


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("baseline", ["black", 0.5, "0.25"])
def test_tensor_letterbox_and_references_equal_the_numpy_path(shape, baseline):
    gen = torch.Generator().manual_seed(sum(shape))
    t = torch.rand(3, *shape, generator=gen)
    lb = Letterbox.fit(shape, (64, 64))
    array = read_image(t)
    want_x = to_input(array, lb, torch.float64, torch.device("cpu"))
    want_x0 = reference_inputs(baseline, array, lb, torch.float64, torch.device("cpu"))
    got_x = letterbox_tensor(t, lb, torch.float64, torch.device("cpu"))
    got_x0 = tensor_reference_inputs(baseline, t, lb, torch.float64, torch.device("cpu"))
    assert got_x.shape == want_x.shape == (1, 3, 64, 64) and got_x0.shape == want_x0.shape
    resized = lb.new_unpad != (shape[1], shape[0])
    # cv2 rounds its bilinear weights to fixed point; without a resize only the float32 x·255/255 round trip differs
    tol = 1e-5 if resized else 1e-7
    torch.testing.assert_close(got_x, want_x, rtol=0, atol=tol)
    torch.testing.assert_close(got_x0, want_x0, rtol=0, atol=tol)
    pad = np.ones((64, 64), bool)
    pad[lb.top:lb.top + lb.new_unpad[1], lb.left:lb.left + lb.new_unpad[0]] = False
    assert torch.all(got_x[0][:, torch.from_numpy(pad)] == 114 / 255)  # grey padding, exactly


def test_blur_and_background_images_take_the_numpy_path():
    t = torch.rand(3, 32, 32)
    lb = Letterbox.fit((32, 32), (64, 64))
    assert tensor_reference_inputs("blur", t, lb, torch.float32, torch.device("cpu")) is None
    assert tensor_reference_inputs([t], t, lb, torch.float32, torch.device("cpu")) is None


@pytest.mark.parametrize("shape", [(48, 64), (130, 90)])
def test_tensor_letterbox_never_reads_the_data_back(shape):
    """On `meta` any host copy or sync would raise (no data); the recorder sees no sync op on the CPU either."""
    lb = Letterbox.fit(shape, (64, 64))
    meta = torch.empty(3, *shape, device="meta")
    x = letterbox_tensor(meta, lb, torch.float32, meta.device)
    x0 = tensor_reference_inputs("black", meta, lb, torch.float32, meta.device)
    assert x.is_meta and x0.is_meta and x.shape == x0.shape == (1, 3, 64, 64)
    with pytest.raises(NotImplementedError):  # while the numpy path cannot even read it
        read_image(meta)
    rec = _Recorder()
    with rec:
        letterbox_tensor(torch.rand(3, *shape), lb, torch.float32, torch.device("cpu"))
        tensor_reference_inputs(0.5, torch.rand(3, *shape), lb, torch.float32, torch.device("cpu"))
    assert not rec.bad, rec.bad
