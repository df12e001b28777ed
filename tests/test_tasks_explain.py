"""relprop on every task of issue 27: pose keypoints, oriented boxes, classes, instance masks, and YOLOv10/YOLO12.

Completeness in float64 for every task, family and target kind (models traced once per session at 64 px, BatchNorm
folded as `Explainer` does by default), closed forms of the new pieces (sin/cos rule, keypoint weights, rotated
matching, the mask product), several targets at once equal to each alone, and the refusals of bad inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fxgraph
import relprop
from relprop.engine import RelevanceGraph
from relprop.target import Layout, TargetSet, match

from tests.conftest import completeness_ok
from tests.tasks_fixtures import task_trace

D = torch.float64
IMAGE = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)  # BGR, letterboxed to itself
_EXPLAINERS: dict = {}


def explainer(yaml: str, branch: str | None = None) -> relprop.Explainer:
    key = (yaml, branch)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = relprop.Explainer(task_trace(yaml, 64, D, branch).with_folded_batchnorm())
    return _EXPLAINERS[key]


def best_boxes(ex: relprop.Explainer, n: int = 2) -> np.ndarray:
    """The boxes (original = input pixels here) of the n most confident raw candidates: xyxy, or xywhr for OBB."""
    x = torch.from_numpy(IMAGE[..., ::-1].copy()).permute(2, 0, 1)[None].to(D) / 255
    pred = ex.graph.module(x)[0][0].detach()
    order = pred[4:4 + ex.graph.nc].amax(0).argsort(descending=True)[:n]
    cols = pred[:, order].T.numpy()
    fmt = ex.graph.facts.box_format
    if fmt == "xywhr":
        return np.concatenate([cols[:, :4], cols[:, -1:]], 1)
    if fmt == "xyxy":
        return cols[:, :4]
    x, y, w, h = cols[:, :4].T
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)


CASES = [  # (yaml, branch, targets)
    ("yolov8n-pose.yaml", None, ("class", "box", "keypoints")),
    ("yolo11n-pose.yaml", None, ("keypoints",)),
    ("yolo26n-pose.yaml", None, ("keypoints", "box")),
    ("yolov8n-obb.yaml", None, ("class", "box")),
    ("yolo11n-obb.yaml", None, ("box",)),
    ("yolo26n-obb.yaml", None, ("class", "box")),
    ("yolov10n.yaml", None, ("class", "box")),
    ("yolov10n.yaml", "one2one", ("class",)),
    ("yolo12n.yaml", None, ("class", "box")),
    ("yolo12n-seg.yaml", None, ("mask", "class")),
]


@pytest.mark.parametrize("yaml,branch,targets", CASES, ids=[f"{c[0]}-{c[1] or 'default'}" for c in CASES])
def test_completeness_per_task_family_and_target(yaml, branch, targets):
    ex = explainer(yaml, branch)
    boxes = best_boxes(ex)
    for target in targets:
        exs = ex.explain_boxes(IMAGE, boxes, target=target, iou=0.5)
        assert len(exs) == 2
        for e in exs:
            assert e.target == target and len(e.candidates) >= 1
            assert completeness_ok(e, 1e-6), (target, e.delta, e.score, e.reference_score)
            # something was explained (a random YOLO26's class probabilities may saturate at 1.0 at both ends)
            assert abs(e.score - e.reference_score) > 1e-9 or target == "class"
    one = ex.explain(IMAGE, boxes[0], target=targets[0], iou=0.5)  # the old single-box call still returns one
    assert isinstance(one, relprop.Explanation)


def test_pose_one_keypoint_and_several_targets_equal_each_alone():
    ex = explainer("yolov8n-pose.yaml")
    boxes = best_boxes(ex)
    together = ex.explain_boxes(IMAGE, boxes, target="keypoints", keypoint=5, iou=0.5)
    for box, t in zip(boxes, together):
        alone = ex.explain_box(IMAGE, box, target="keypoints", keypoint=5, iou=0.5)
        np.testing.assert_array_equal(alone.candidates, t.candidates)
        torch.testing.assert_close(alone.input_relevance, t.input_relevance, rtol=1e-10, atol=1e-12)
        assert alone.score == pytest.approx(t.score, abs=1e-12) and completeness_ok(alone, 1e-6)
        assert alone.keypoint == 5 and alone.keypoints.shape == (17, 3)
    # the score of keypoint 5 is its x + y + visibility summed over the matched candidates
    x = torch.from_numpy(IMAGE[..., ::-1].copy()).permute(2, 0, 1)[None].to(D) / 255
    pred = ex.graph.module(x)[0][0].detach()
    rows = 4 + ex.graph.nc + 5 * 3 + torch.arange(3)
    want = float(pred[rows][:, torch.as_tensor(together[0].candidates)].sum())
    assert together[0].score == pytest.approx(want, rel=1e-6)  # the image reaches the graph through float32


def test_obb_boxes_as_corners_and_several_equal_each_alone():
    ex = explainer("yolo11n-obb.yaml")
    boxes = best_boxes(ex)
    together = ex.explain_boxes(IMAGE, boxes, target="box", iou=0.5)
    corners = relprop.target.rotated_corners(boxes[0])
    by_corners = ex.explain_box(IMAGE, corners, target="box", iou=0.5)
    np.testing.assert_array_equal(by_corners.candidates, together[0].candidates)
    for box, t in zip(boxes, together):
        alone = ex.explain_box(IMAGE, box, target="box", iou=0.5)
        np.testing.assert_array_equal(alone.candidates, t.candidates)
        torch.testing.assert_close(alone.input_relevance, t.input_relevance, rtol=1e-10, atol=1e-12)


def test_obb_detections_use_rotated_nms(tmp_path):
    ex = explainer("yolo26n-obb.yaml")
    dets = ex.explain_boxes(IMAGE, None, conf=0.0, max_det=2, target="box")
    assert dets and all(e.box.shape == (5,) and completeness_ok(e, 1e-6) for e in dets)
    assert dets[0].save_png(tmp_path / "obb.png").stat().st_size > 0


def test_classify_top1_and_other_class():
    for yaml in ("yolov8n-cls.yaml", "yolo11n-cls.yaml"):
        ex = explainer(yaml)
        x = torch.from_numpy(IMAGE[..., ::-1].copy()).permute(2, 0, 1)[None].to(D) / 255
        probs = ex.graph.module(x)[0][0].detach()
        top = ex.explain(IMAGE)
        assert isinstance(top, relprop.Explanation) and top.cls == int(probs.argmax())
        assert top.score == pytest.approx(float(probs.max()), rel=1e-6) and completeness_ok(top, 1e-6)
        other = ex.explain_box(IMAGE, cls=7)
        assert other.cls == 7 and other.score == pytest.approx(float(probs[7]), rel=1e-6)
        assert completeness_ok(other, 1e-6) and other.box.size == 0


def test_classifier_explains_the_pixels_ultralytics_classifies():
    """A classifier is explained on ultralytics's classify preprocessing (short side resized, centre cropped), not a
    letterbox: the explained top-1 class and probability are `YOLO.predict`'s, and the heatmap, in original pixels, is
    0 where the crop cut the image and keeps the relevance's sum."""
    import copy

    from ultralytics import YOLO

    from relprop.image import CenterCrop, read_image, to_input
    from tests.tasks_fixtures import task_model

    yaml = "yolo11n-cls.yaml"
    ex = explainer(yaml)  # 64 px, float64
    image = (np.random.default_rng(1).random((48, 80, 3)) * 255).astype(np.uint8)  # wide: cropped at both sides
    yolo = YOLO(yaml, task="classify")
    yolo.model = copy.deepcopy(task_model(yaml))
    probs = yolo.predict(image, imgsz=64, verbose=False)[0].probs.data.double()
    e = ex.explain(image)
    assert e.cls == int(probs.argmax()) and e.score == pytest.approx(float(probs[e.cls]), rel=1e-5)
    # the letterboxed pixels give another probability, far outside that tolerance: the check can tell them apart
    boxed = ex.graph.module(to_input(read_image(image), relprop.Letterbox.fit((48, 80), (64, 64)), D, "cpu"))[0][0]
    assert abs(float(boxed[e.cls]) - e.score) > 1e-3 * e.score
    crop = CenterCrop.fit((48, 80), (64, 64))
    assert (crop.resized, crop.top, crop.left) == ((106, 64), 0, 21)  # int(64·80/48) = 106, (106 − 64)/2 = 21
    assert e.heatmap.shape == (48, 80)
    assert not e.heatmap[:, :15].any() and not e.heatmap[:, 66:].any()  # columns < 21/1.325, >= 85/1.325 are cut
    np.testing.assert_allclose(e.heatmap, crop.map_to_original(e.input_relevance.sum(0).numpy()), rtol=1e-12)
    ones = crop.map_to_original(np.ones((64, 64)))  # a uniform map keeps its sum, inside the crop's columns
    assert ones.sum() == pytest.approx(64 * 64, rel=0.02) and ones[:, 20:60].min() > 0

@pytest.mark.parametrize("shape,imgsz", [((48, 80), (64, 64)), ((97, 33), (64, 64)), ((50, 70), (32, 48)),
                                         ((64, 64), (64, 64))])
def test_center_crop_is_ultralytics_classify_transforms(shape, imgsz):
    """CenterCrop.apply gives exactly the pixels of classify_transforms' resize and crop (the part ultralytics's
    predictor runs on the host, on the uint8 BGR image); a non-integral float image takes the float path, which agrees
    to within one grey level."""
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    from relprop.image import CenterCrop

    image = (np.random.default_rng(2).random((*shape, 3)) * 255).astype(np.uint8)
    host = classify_transforms(imgsz).transforms[:2]  # Resize, CenterCrop
    want = np.asarray(host[1](host[0](Image.fromarray(image))), dtype=np.float32)
    crop = CenterCrop.fit(shape, imgsz)
    np.testing.assert_array_equal(crop.apply(image.astype(np.float32)), want)
    shifted = crop.apply(image.astype(np.float32) * 0.98 + 0.25)
    assert shifted.shape == want.shape and np.abs(shifted - (want * 0.98 + 0.25)).max() <= 1.0

def test_mask_target_png_marks_the_instance(tmp_path):
    ex = explainer("yolo12n-seg.yaml")
    e = ex.explain_box(IMAGE, best_boxes(ex)[0], target="mask", iou=0.5)
    assert e.mask is not None and e.mask.shape == IMAGE.shape[:2]
    assert e.save_png(tmp_path / "mask.png").stat().st_size > 0
    pose = explainer("yolov8n-pose.yaml").explain_box(IMAGE, best_boxes(explainer("yolov8n-pose.yaml"))[0],
                                                      target="keypoints", keypoint=0, iou=0.5)
    assert pose.save_png(tmp_path / "pose.png").stat().st_size > 0



def test_unfolded_yolo12_is_complete():
    """BatchNorm left unfolded in YOLO12: AAttn's `flatten(2).transpose(1, 2)` hands BN a channels-last gradient, for
    which torch's CPU batch_norm backward is wrong (2.14.1; 8+ channels); relprop's BatchNorm rule makes it exact."""
    ex = relprop.Explainer(task_trace("yolo12n.yaml", 64, D))
    assert any(fxgraph.info(n).kind == "batchnorm" for n in ex.graph.module.graph.nodes)
    for target in ("class", "box"):
        for e in ex.explain_boxes(IMAGE, best_boxes(ex), target=target, iou=0.5):
            assert completeness_ok(e, 1e-6), (target, e.delta, e.score, e.reference_score)


# -- closed forms -------------------------------------------------------------------------------------------------

class SinCos(torch.nn.Module):
    def forward(self, x):
        return torch.sin(x) + torch.cos(2 * x)


def test_sin_cos_rule_is_the_secant():
    gm = fxgraph.trace_module(SinCos(), torch.rand(2, 3, 4, 4, dtype=D))
    engine = RelevanceGraph(gm, channels=False)
    x = torch.rand(1, 3, 4, 4, dtype=D) * 4 - 2
    x0 = torch.rand(1, 3, 4, 4, dtype=D) * 4 - 2
    rel = engine.relevance(x, engine.reference(x0), lambda o: o[0].flatten(1).sum(-1))
    secant = (torch.sin(x) - torch.sin(x0)) / (x - x0) + 2 * (torch.cos(2 * x) - torch.cos(2 * x0)) / (2 * x - 2 * x0)
    torch.testing.assert_close(rel.attribution[0], (secant * (x - x0))[0], rtol=1e-12, atol=1e-12)
    assert abs(float(rel.delta)) < 1e-12
    # at Δx = 0 the rule takes the derivative: no 0/0
    same = engine.relevance(x0, engine.reference(x0), lambda o: o[0].flatten(1).sum(-1))
    assert torch.isfinite(same.attribution).all() and float(same.attribution.abs().max()) == 0.0


def _toy_pred(nc: int, extra: int, anchors: int = 6) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(4 + nc + extra, anchors, dtype=D, generator=gen)
    pred[:4] = torch.tensor([[10.0, 10, 8, 6]], dtype=D).T + torch.arange(anchors, dtype=D) * 20  # xywh apart
    return pred


def test_keypoint_target_weights():
    layout = Layout(task="pose", nc=2, kpt_shape=(4, 3))
    pred = _toy_pred(2, 12)
    t = match(pred, np.array([6.0, 7, 14, 13]), layout, iou=0.9, kind="keypoints", keypoint=2)
    w = t.weights(layout, pred.shape[0], pred.shape[1], D, pred.device)
    want = torch.zeros_like(pred)
    want[4 + 2 + 6:4 + 2 + 9, 0] = 1  # keypoint 2's x, y, visibility of candidate 0, the only match
    assert torch.equal(w, want)
    t_all = match(pred, np.array([6.0, 7, 14, 13]), layout, iou=0.9, kind="keypoints")
    want[4 + 2:, 0] = 1
    assert torch.equal(t_all.weights(layout, pred.shape[0], pred.shape[1], D, pred.device), want)


def test_rotated_matching_is_invariant_to_a_90_degree_turn():
    layout = Layout(task="obb", nc=1, box_format="xywhr")
    pred = _toy_pred(1, 1)
    pred[-1] = 0.3  # every candidate's angle
    x, y, w, h = pred[:4, 2].tolist()
    box = np.array([x + 0.5, y, w, h, 0.3])
    turned = np.array([x + 0.5, y, h, w, 0.3 + math.pi / 2])
    a, b = match(pred, box, layout, iou=0.5), match(pred, turned, layout, iou=0.5)
    assert torch.equal(a.matched, b.matched) and int(a.matched.sum()) == 1 and bool(a.matched[2])
    torch.testing.assert_close(a.ious, b.ious, rtol=1e-9, atol=1e-9)
    from ultralytics.utils.metrics import probiou

    want = probiou(torch.tensor(box[None]), torch.tensor([[x, y, w, h, 0.3]], dtype=D))
    assert float(a.ious[2]) == pytest.approx(float(want), rel=1e-12)


def test_mask_target_on_a_toy_proto():
    """f = Σ_{matched a} Σ_{p in box} Σ_j coef[j, a]·proto[j, p], and its split against the reference is exact:
    Σ_outputs m·Δout = f(x) − f(x0) with m the product rule's multipliers."""
    nm, layout = 2, Layout(task="segment", nc=1, nm=2)
    pred = _toy_pred(1, nm)[None].requires_grad_(True)
    proto = torch.rand(1, nm, 4, 4, dtype=D, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    t = match(pred[0].detach(), np.array([6.0, 7, 14, 13]), layout, iou=0.9, kind="mask")
    targets = TargetSet.build([t], layout, (pred.detach(), proto.detach()), (16, 16))
    region = t.region((4, 4), (16, 16), D, pred.device)
    want_region = torch.zeros(4, 4, dtype=D)
    want_region[2:4, 2:4] = 1  # col c inside when 6/4 <= c < 14/4, row r when 7/4 <= r < 13/4
    assert torch.equal(region, want_region)
    ref = (torch.rand_like(pred.detach()), torch.rand_like(proto.detach()))
    f = targets.function(ref)
    value = f((pred, proto))
    closed = float((pred[0, 5:7, 0].detach() @ (proto[0].detach() * want_region).sum((1, 2))))
    assert float(value.detach()) == pytest.approx(closed, rel=1e-12)
    gp, gq = torch.autograd.grad(value.sum(), (pred, proto))
    split = float((gp * (pred - ref[0])).sum() + (gq * (proto - ref[1])).sum())
    assert split == pytest.approx(float(value) - float(f(ref)), rel=1e-12)


# -- refusals -----------------------------------------------------------------------------------------------------

def test_bad_inputs_for_the_new_tasks(tmp_path):
    pose, obb, det = explainer("yolov8n-pose.yaml"), explainer("yolo11n-obb.yaml"), explainer("yolov10n.yaml")
    box = best_boxes(pose)[0]
    with pytest.raises(relprop.OptionsError, match=r"keypoint=17 is out of range: this model has 17 keypoints"):
        pose.explain(IMAGE, box, target="keypoints", keypoint=17)
    with pytest.raises(relprop.OptionsError, match=r"keypoint 'nose' is not a keypoint name.*names no keypoints"):
        pose.explain(IMAGE, box, target="keypoints", keypoint="nose")
    with pytest.raises(relprop.OptionsError, match=r"keypoint=3 is given with target='class'"):
        pose.explain(IMAGE, box, keypoint=3)
    with pytest.raises(relprop.OptionsError, match=r"target='keypoints' needs a pose model; this is a detect model"):
        det.explain(IMAGE, box, target="keypoints")
    with pytest.raises(relprop.OptionsError, match=r"target='mask' needs a segmentation model.*pose model"):
        pose.explain(IMAGE, box, target="mask")
    with pytest.raises(relprop.BoxError, match=r"OBB box must be five .* got 4 value"):
        obb.explain(IMAGE, [1.0, 2, 30, 40])
    with pytest.raises(relprop.BoxError, match=r"zero width or height"):
        obb.explain(IMAGE, [20.0, 20, 0, 10, 0.1])
    cls = explainer("yolov8n-cls.yaml")
    with pytest.raises(relprop.OptionsError, match=r"cls=1000: class 1000 is not a class of this model \(0..999\)"):
        cls.explain(IMAGE, cls=1000)
    with pytest.raises(relprop.BoxError, match=r"classifier explains the whole image: give no box"):
        cls.explain(IMAGE, [1.0, 2, 30, 40])
    with pytest.raises(relprop.OptionsError, match=r"classifier explains target='class' only"):
        cls.explain(IMAGE, target="box")
    with pytest.raises(relprop.OptionsError, match=r"keypoint must be a keypoint index >= 0"):
        relprop.ExplainOptions(keypoint=-1)


def test_checkpoint_the_installed_ultralytics_cannot_run(tmp_path):
    """A checkpoint pickled with a module class this ultralytics lacks: our error names it and the version."""
    import ultralytics
    from ultralytics.nn.modules import block

    class FutureBlock(torch.nn.Module):
        pass

    FutureBlock.__module__, FutureBlock.__qualname__ = block.__name__, "FutureBlock"
    block.FutureBlock = FutureBlock
    try:
        torch.save({"model": FutureBlock()}, tmp_path / "future.pt")
    finally:
        del block.FutureBlock
    with pytest.raises(fxgraph.ModelLoadError, match=rf"future\.pt.*ultralytics {ultralytics.__version__}.*FutureBlock"):
        fxgraph.trace(tmp_path / "future.pt", imgsz=64)
