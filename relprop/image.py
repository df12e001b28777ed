"""Images in, network inputs out: reading, ultralytics-style letterboxing (centre cropping for a classifier) and its
inverse, and references.

Everything is converted to one form first, a float32 HWC BGR array in [0, 255] (what cv2 reads), so paths, numpy
arrays, PIL images and tensors share one letterbox.  The letterbox is ultralytics's `LetterBox(auto=False)`: scale
to fit, centre, pad with grey 114, exactly, so boxes and candidates agree with `YOLO.predict` on the same size.  A
classifier sees what ultralytics's classify predictor feeds it instead: the short side resized, the centre cropped
(`CenterCrop`); `geometry_for(task)` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np
import torch

from .errors import BaselineError, ImageError

PAD_VALUE = 114.0


@dataclass(frozen=True)
class Letterbox:
    """The geometry of one letterbox: original (H, W) → input (h, w), scale `ratio`, padding `top`/`left`."""

    orig_shape: tuple[int, int]
    new_shape: tuple[int, int]
    ratio: float
    new_unpad: tuple[int, int]  # (w, h) of the resized image, as cv2 wants it
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def fit(cls, orig_shape: tuple[int, int], new_shape: tuple[int, int]) -> "Letterbox":
        """The letterbox ultralytics computes for an image of `orig_shape` and a network input of `new_shape`."""
        h0, w0 = orig_shape
        r = min(new_shape[0] / h0, new_shape[1] / w0)
        new_unpad = (max(round(w0 * r), 1), max(round(h0 * r), 1))
        dw, dh = (new_shape[1] - new_unpad[0]) / 2, (new_shape[0] - new_unpad[1]) / 2
        return cls(tuple(orig_shape), tuple(new_shape), r, new_unpad,
                   round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1))

    def apply(self, image: np.ndarray, pad_value: float = PAD_VALUE) -> np.ndarray:
        """Resize and pad an HWC image (any number of channels) like ultralytics."""
        if image.shape[:2] != self.orig_shape:
            raise ImageError(f"letterbox made for {self.orig_shape}, got an image of {image.shape[:2]}")
        if image.shape[1::-1] != self.new_unpad:
            image = cv2.resize(image, self.new_unpad, interpolation=cv2.INTER_LINEAR)
        if image.ndim == 2:
            image = image[..., None]
        out = np.full((*self.new_shape, image.shape[2]), pad_value, dtype=image.dtype)
        out[self.top:self.top + image.shape[0], self.left:self.left + image.shape[1]] = image
        return out

    def box_to_input(self, box: Sequence[float]) -> np.ndarray:
        """xyxy in original pixels → xyxy in network-input pixels."""
        b = np.asarray(box, dtype=np.float64).copy()
        b[[0, 2]] = b[[0, 2]] * self.ratio + self.left
        b[[1, 3]] = b[[1, 3]] * self.ratio + self.top
        return b

    def box_to_original(self, box: Sequence[float], clip: bool = True) -> np.ndarray:
        """xyxy in network-input pixels → xyxy in original pixels, clipped to the image like ultralytics unless
        `clip=False` (then it maps back exactly with `box_to_input`)."""
        b = np.asarray(box, dtype=np.float64).copy()
        b[[0, 2]] = (b[[0, 2]] - self.left) / self.ratio
        b[[1, 3]] = (b[[1, 3]] - self.top) / self.ratio
        if clip:
            b[[0, 2]] = b[[0, 2]].clip(0, self.orig_shape[1])
            b[[1, 3]] = b[[1, 3]].clip(0, self.orig_shape[0])
        return b

    def map_to_original(self, values: np.ndarray) -> np.ndarray:
        """An (h, w) map at the network input → (H, W) in original pixels: crop the padding, resize back, and scale
        by the area ratio so that sums are kept (a pixel of the input covers 1/ratio² original pixels)."""
        h, w = self.new_unpad[1], self.new_unpad[0]
        crop = np.ascontiguousarray(values[self.top:self.top + h, self.left:self.left + w], dtype=np.float64)
        out = cv2.resize(crop, (self.orig_shape[1], self.orig_shape[0]), interpolation=cv2.INTER_LINEAR)
        return out * (h * w) / (self.orig_shape[0] * self.orig_shape[1])


@dataclass(frozen=True)
class CenterCrop:
    """The geometry of ultralytics's classify preprocessing (`classify_transforms`, what `YOLO.predict` does for a
    classifier): resize with PIL's antialiased bilinear filter, the short side to a square input's size (else to
    exactly (h, w)), then crop the centre.  Original (H, W) → resized `resized` (w, h) → input (h, w) at `top`/`left`
    of the resized image.  Same interface as `Letterbox`."""

    orig_shape: tuple[int, int]
    new_shape: tuple[int, int]
    resized: tuple[int, int]  # (w, h) after the resize
    top: int
    left: int

    @classmethod
    def fit(cls, orig_shape: tuple[int, int], new_shape: tuple[int, int]) -> "CenterCrop":
        """torchvision's Resize(size) (short side; long side truncated, as `int(size·long/short)`) + CenterCrop."""
        (h0, w0), (h, w) = orig_shape, new_shape
        if h == w:
            long = int(h * max(h0, w0) / min(h0, w0))
            resized = (h, long) if w0 <= h0 else (long, h)
        else:
            resized = (w, h)
        return cls(tuple(orig_shape), tuple(new_shape), resized, int(round((resized[1] - h) / 2.0)),
                   int(round((resized[0] - w) / 2.0)))

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) resize factors: resized / original."""
        return self.resized[0] / self.orig_shape[1], self.resized[1] / self.orig_shape[0]

    def apply(self, image: np.ndarray, pad_value: float = PAD_VALUE) -> np.ndarray:
        """Resize and crop an HWC image like ultralytics's classify predictor (`pad_value` unused: nothing is padded).
        An image of whole numbers (what cv2 reads) is resized as uint8, exactly as PIL does for ultralytics; any other
        per channel in 32-bit float."""
        if image.shape[:2] != self.orig_shape:
            raise ImageError(f"centre crop made for {self.orig_shape}, got an image of {image.shape[:2]}")
        image = image[..., None] if image.ndim == 2 else image
        if image.shape[1::-1] != self.resized:
            image = _pil_resize(image, self.resized)
        h, w = self.new_shape
        return image[self.top:self.top + h, self.left:self.left + w]

    def box_to_input(self, box: Sequence[float]) -> np.ndarray:
        """xyxy in original pixels → xyxy in network-input pixels."""
        b = np.asarray(box, dtype=np.float64).copy()
        sx, sy = self.scale
        b[[0, 2]] = b[[0, 2]] * sx - self.left
        b[[1, 3]] = b[[1, 3]] * sy - self.top
        return b

    def box_to_original(self, box: Sequence[float], clip: bool = True) -> np.ndarray:
        """xyxy in network-input pixels → xyxy in original pixels (clipped to the image unless `clip=False`)."""
        b = np.asarray(box, dtype=np.float64).copy()
        sx, sy = self.scale
        b[[0, 2]] = (b[[0, 2]] + self.left) / sx
        b[[1, 3]] = (b[[1, 3]] + self.top) / sy
        if clip:
            b[[0, 2]] = b[[0, 2]].clip(0, self.orig_shape[1])
            b[[1, 3]] = b[[1, 3]].clip(0, self.orig_shape[0])
        return b

    def map_to_original(self, values: np.ndarray) -> np.ndarray:
        """An (h, w) map at the network input → (H, W) in original pixels: placed at the crop in the resized image
        (0 where the crop cut the image), resized back, and scaled by the area ratio so that sums are kept."""
        h, w = self.new_shape
        full = np.zeros((self.resized[1], self.resized[0]), dtype=np.float64)
        full[self.top:self.top + h, self.left:self.left + w] = values
        out = cv2.resize(full, (self.orig_shape[1], self.orig_shape[0]), interpolation=cv2.INTER_LINEAR)
        return out * (self.resized[0] * self.resized[1]) / (self.orig_shape[0] * self.orig_shape[1])


def _pil_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HWC float [0, 255] → (size[1], size[0], C) float32, resized by PIL's bilinear filter (antialiased when
    shrinking), as torchvision's Resize does on the PIL image ultralytics makes of the uint8 array."""
    from PIL import Image

    if np.array_equal(image, np.round(image)):
        return np.asarray(Image.fromarray(image.astype(np.uint8)).resize(size, Image.BILINEAR), dtype=np.float32)
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32))  # mode "F"
                           .resize(size, Image.BILINEAR)) for c in range(image.shape[2])]
    return np.stack(channels, axis=-1).astype(np.float32)


Geometry = Union[Letterbox, CenterCrop]


def geometry_for(task: str | None) -> type:
    """How ultralytics's predictor maps an image onto the network input for a model of `task` (FlatGraph.facts.task):
    a classifier centre-crops (`CenterCrop`), every other task letterboxes (`Letterbox`)."""
    return CenterCrop if task == "classify" else Letterbox


class ImageArray(np.ndarray):
    """What `read_image` returns: a float32 HWC BGR array known to be in [0, 255], so reading it again (the explainer
    reads what `relprop.explain` checked) never takes a black image for a normalised one.  Slices keep the mark;
    arithmetic (`image / 255`) gives a plain array, whose scale is no longer known, so it is checked again."""

    def __array_wrap__(self, array, context=None, return_scalar=False):
        result = np.asarray(array)
        return result[()] if return_scalar else result


def read_image(image: Any) -> ImageArray:
    """A path, numpy HWC BGR(A) or HW grey array (uint8, or float in [0, 255]), 8-bit PIL image, or float tensor (CHW
    or 1CHW RGB in [0, 1], as ultralytics takes tensors) → float32 HWC BGR array in [0, 255]; ImageError for any other
    dtype, shape or mode, for NaN, infinite or out-of-range values, and for a float array with every value in [0, 1]
    (ambiguous: normalised or nearly black; pass uint8, float in [0, 255] or a tensor).  The result is an
    `ImageArray`, which is read again as it is."""
    return _read(image).view(ImageArray)


def _read(image: Any) -> np.ndarray:
    """`read_image` before marking."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image file; give one image file")
        if not path.is_file():
            raise ImageError(f"{path}: no such image file")
        array = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if array is None:
            raise ImageError(f"{path}: not a readable image (cv2 could not decode it)")
        _check_complete(path)
        return array.astype(np.float32)
    if isinstance(image, torch.Tensor):
        t = image_tensor(image).cpu()
        return np.ascontiguousarray(t.flip(0).permute(1, 2, 0).float().numpy() * 255.0)
    if type(image).__module__.startswith("PIL."):
        if image.mode in ("I", "F") or image.mode.startswith("I;"):
            raise ImageError(f"a PIL image in mode {image.mode!r} (16/32-bit values) would be clipped to 8 bits; "
                             "convert it to 8-bit RGB, or pass a float array in [0, 255]")
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
        return np.ascontiguousarray(rgb[..., ::-1])
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.size == 0:
            raise ImageError(f"a numpy image must be HWC BGR with 3 channels; got shape {image.shape}")
        if image.dtype != np.uint8:
            if not np.issubdtype(image.dtype, np.floating):
                raise ImageError(f"a numpy image must be uint8 or float in [0, 255]; got dtype {image.dtype} "
                                 "(convert it to uint8 first)")
            _check_range("a numpy image", image, 255.0, "BGR in [0, 255]")
            if not isinstance(image, ImageArray):  # read_image's own output is [0, 255] already
                _check_not_unit_range(image)
        return np.ascontiguousarray(image[..., :3], dtype=np.float32)
    raise ImageError(f"cannot read an image from {type(image).__name__}; give a path, numpy array, PIL image or tensor")


def image_tensor(image: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) or (1, 3, H, W) RGB tensor in [0, 1] → (3, H, W), checked where it lies (the range check reads two
    numbers back from the device, before any work; the image itself stays there)."""
    t = image.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ImageError(f"an image tensor must be (3, H, W) or (1, 3, H, W) RGB in [0, 1]; got {tuple(image.shape)}")
    if not t.is_floating_point():
        raise ImageError(f"an image tensor must be floating point RGB in [0, 1]; got dtype {t.dtype}")
    if t.numel() == 0:
        raise ImageError(f"an image tensor must have at least one pixel; got shape {tuple(image.shape)}")
    v = t.double()  # float64: tiny negatives must not round to -0.0 and pass
    finite = torch.isfinite(v)
    lo, hi, bad = torch.stack([v.where(finite, 0).min(), v.where(finite, 0).max(), (~finite).sum()]).tolist()
    if bad:
        raise ImageError(f"an image tensor holds {int(bad)} NaN or infinite value(s); expected RGB in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        raise ImageError(f"an image tensor has values in [{lo:g}, {hi:g}]; expected RGB in [0, 1] (divide by 255)")
    return t


def letterbox_tensor(t: torch.Tensor, box: Letterbox, dtype: torch.dtype, device: torch.device,
                     pad_value: float = PAD_VALUE) -> torch.Tensor:
    """(C, H, W) or (K, C, H, W) RGB [0, 1] → network input (K, C, h, w), letterboxed on `device` (no host copy).

    Bilinear resize without antialiasing, cv2's INTER_LINEAR (half-pixel centres); cv2 rounds its interpolation
    weights to fixed point, so the two agree to about 1e-5 of the range where a resize is needed, exactly where not.
    """
    t = t.to(device=device, dtype=dtype)
    t = t.unsqueeze(0) if t.dim() == 3 else t
    w, h = box.new_unpad
    if tuple(t.shape[-2:]) != (h, w):
        t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    if tuple(t.shape[-2:]) == tuple(box.new_shape):
        return t
    bottom, right = box.new_shape[0] - box.top - h, box.new_shape[1] - box.left - w
    return torch.nn.functional.pad(t, (box.left, right, box.top, bottom), value=pad_value / 255.0)  # one op, no copy_


def tensor_reference_inputs(baseline: Any, t: torch.Tensor, box: Letterbox, dtype: torch.dtype,
                            device: torch.device) -> torch.Tensor | None:
    """`reference_inputs` for an image tensor (3, H, W), built on `device`, for the baselines that need no host work
    ("black", a constant, a tensor); None for the others ("blur", background images), which take the numpy path."""
    if baseline is None or (isinstance(baseline, str) and baseline == "black"):
        return letterbox_tensor(torch.zeros_like(t), box, dtype, device)
    if isinstance(baseline, str):
        try:
            baseline = float(baseline)
        except ValueError:
            return None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= float(baseline) <= 1.0:
            raise BaselineError(f"a constant baseline must be in [0, 1] (input scale); got {baseline}")
        return letterbox_tensor(torch.full_like(t, float(baseline)), box, dtype, device)
    if isinstance(baseline, torch.Tensor):
        return reference_inputs(baseline, np.empty((0, 0, 3), np.float32), box, dtype, device)
    return None


def _check_not_unit_range(image: np.ndarray) -> None:
    """ImageError for a float array whose values all lie in [0, 1]: a normalised image and a nearly black [0, 255]
    one look the same, and reading it as [0, 255] would explain a black image and find no box, without a word."""
    if float(np.max(image)) <= 1.0:
        raise ImageError(f"a float numpy image {image.shape} with every value in [0, 1] is ambiguous (normalised, or "
                         "[0, 255] and nearly black?); pass it as uint8 ((image * 255).round().astype(np.uint8)), "
                         "as a float array in [0, 255] (image * 255), or as a (3, H, W) RGB tensor in [0, 1]")


def _check_complete(path: Path) -> None:
    """ImageError for a JPEG without its end-of-image marker: cv2 decodes a truncated JPEG into a half-grey image
    with only a printed warning, which would be explained as if it were real."""
    data = path.read_bytes()
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:]:
        raise ImageError(f"{path}: truncated JPEG (no end-of-image marker); re-export or re-copy the file")


def _check_range(what: str, values: np.ndarray, high: float, expected: str) -> None:
    """ImageError unless every value is finite and in [0, `high`], naming what was found.  Two reductions in the
    array's own dtype (a NaN or infinity shows in its min or max), no float64 copy: this runs on every explain call."""
    v = np.asarray(values)
    lo, hi = float(v.min()), float(v.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ImageError(f"{what} holds {int((~np.isfinite(v)).sum())} NaN or infinite value(s); expected {expected}")
    if lo < 0.0 or hi > high:
        raise ImageError(f"{what} has values in [{lo:g}, {hi:g}]; expected {expected}")


def to_input(array: np.ndarray, box: Geometry, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Float HWC BGR [0, 255], letterboxed (or centre-cropped) → network input (1, 3, h, w) RGB in [0, 1]."""
    lb = box.apply(array)
    t = torch.from_numpy(np.ascontiguousarray(lb[..., ::-1].transpose(2, 0, 1))) / 255.0
    return t.unsqueeze(0).to(device=device, dtype=dtype)


def reference_inputs(baseline: Any, array: np.ndarray, box: Geometry, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
    """The K reference inputs (K, 3, h, w) for an image (DeepSHAP averages the attribution over them).

    `baseline`: "black" (the default) — the image content replaced by black, the letterbox padding kept, so the
    padding gets no relevance; "blur" — a Gaussian blur of the image (σ = max(H, W)/20); a float in [0, 1] — a
    constant grey; a tensor (3, h, w) or (K, 3, h, w) — reference inputs as they are; a list of images — K background
    images, each resized to the image's size and letterboxed like it.
    """
    h0, w0 = array.shape[:2]
    if baseline is None or (isinstance(baseline, str) and baseline == "black"):
        return to_input(np.zeros_like(array), box, dtype, device)
    if isinstance(baseline, str):
        if baseline == "blur":
            sigma = max(h0, w0) / 20
            return to_input(cv2.GaussianBlur(array, (0, 0), sigmaX=sigma, sigmaY=sigma), box, dtype, device)
        try:
            value = float(baseline)
        except ValueError:
            raise BaselineError(f"unknown baseline '{baseline}'; use 'black', 'blur', a number in [0, 1], a tensor "
                                "or a list of background images") from None
        return reference_inputs(value, array, box, dtype, device)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        if not 0.0 <= float(baseline) <= 1.0:
            raise BaselineError(f"a constant baseline must be in [0, 1] (input scale); got {baseline}")
        return to_input(np.full_like(array, float(baseline) * 255.0), box, dtype, device)
    if isinstance(baseline, torch.Tensor):
        t = baseline.detach()
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or tuple(t.shape[1:]) != (3, *box.new_shape):
            raise BaselineError(f"a baseline tensor must be (3, h, w) or (K, 3, h, w) with (h, w) = {box.new_shape}; "
                                f"got {tuple(baseline.shape)}")
        return t.to(device=device, dtype=dtype)
    if isinstance(baseline, (list, tuple)):
        if not baseline:
            raise BaselineError("an empty list of background images")
        refs = []
        for item in baseline:
            bg = read_image(item)
            if bg.shape[:2] != (h0, w0):  # same geometry as the input, so the padding stays relevance-free
                bg = cv2.resize(bg, (w0, h0), interpolation=cv2.INTER_LINEAR)
            refs.append(to_input(bg, box, dtype, device))
        return torch.cat(refs)
    raise BaselineError(f"cannot make a baseline from {type(baseline).__name__}")
