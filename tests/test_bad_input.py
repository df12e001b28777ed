"""Issue 16: bad images and bad explain arguments get our own errors, naming what was found, before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relprop
from relprop.image import read_image


@pytest.mark.parametrize("image, message", [
    (torch.rand(3, 32, 32) * 255, r"values in \[0\S*, 2\d\d.*expected RGB in \[0, 1\]"),
    (torch.full((3, 32, 32), float("nan")), "NaN or infinite"),
    (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite"),
    (torch.zeros(3, 32, 32, dtype=torch.uint8), "floating point"),
    (np.full((32, 32, 3), 1000, dtype=np.uint16), "dtype uint16"),
    (np.full((32, 32, 3), 300.0, dtype=np.float32), r"values in \[300, 300\]"),
    (np.full((32, 32, 3), -1.0), r"values in \[-1, -1\]"),
])
def test_images_outside_the_accepted_forms_raise_image_error(image, message):
    with pytest.raises(relprop.ImageError, match=message):
        read_image(image)


def test_truncated_jpeg_is_refused(tmp_path):
    import cv2

    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert read_image(good).shape == (64, 64, 3)
    with pytest.raises(relprop.ImageError, match="cut.jpg: truncated JPEG"):
        read_image(cut)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jpg", "good.jpg"]  # nothing written


def test_accepted_forms_pass():
    assert read_image(torch.rand(1, 3, 8, 8)).max() <= 255.0
    assert read_image(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8, 3)
    assert read_image(np.full((8, 8, 3), 255.0)).max() == 255.0


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float32, (4, 4, 3), elements=st.floats(0, 1, width=32)))
def test_fuzz_tensors_in_range_are_read_exactly(values):
    t = torch.from_numpy(values).permute(2, 0, 1)
    out = read_image(t)
    np.testing.assert_allclose(out[..., ::-1], values * 255.0, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, (4, 4, 3), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_fuzz_values_outside_the_range_raise_image_error(values):
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    t = torch.from_numpy(values).permute(2, 0, 1)
    if bad.any():
        with pytest.raises(relprop.ImageError):
            read_image(t)
    else:
        read_image(t)


@pytest.mark.parametrize("change, message", [
    (dict(dtype=torch.int32), "dtype must be a torch.dtype"),
    (dict(device="foo"), "device 'foo' is not a torch device"),
    (dict(batch=0), "batch"),
])
def test_explain_arguments_are_refused_up_front(change, message):
    with pytest.raises(relprop.OptionsError, match=message):
        relprop.ExplainOptions.of(**change)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_gpu_is_refused():
    with pytest.raises(relprop.OptionsError, match="no CUDA GPU is available"):
        relprop.ExplainOptions.of(device="cuda")
