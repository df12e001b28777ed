"""Random-weight ultralytics models whose outputs depend on the image, and the boxes to explain on them, shared by
the benchmarks (no YOLO26 weights exist in any package, so its rows use these)."""

from __future__ import annotations

import numpy as np
import torch


def random_model(yaml: str = "yolov8n.yaml") -> torch.nn.Module:
    """A random-weight model (from an ultralytics yaml) whose output depends on the image: a fresh init's signal dies
    out layer by layer (every candidate gets the same score), so BatchNorm statistics are recalibrated on random
    images.  A reg_max=1 head (YOLO26) outputs raw ltrb distances, which random weights make negative (x2 < x1, a box
    no candidate matches): its last box convs are scaled to output distances of about one stride."""
    import fxgraph

    torch.manual_seed(0)
    model = fxgraph.load_ultralytics(yaml)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 320, 320))
    head = model.model[-1]
    if getattr(head, "reg_max", None) == 1:
        with torch.no_grad():
            for convs in (*head.cv2, *(getattr(head, "one2one_cv2", None) or ())):
                convs[-1].weight.mul_(0.01)
                convs[-1].bias.fill_(0.5)
    return model.eval()


def best_candidate_boxes(graph, image: np.ndarray, n: int) -> list[tuple[np.ndarray, int]]:
    """Random weights detect nothing at any usual confidence: the `n` best-scoring raw candidates of `graph` on
    `image`, as (xyxy box in original pixels, class), keeping well-formed boxes that overlap the image.  An OBB
    model's boxes are (x, y, w, h, r) in original pixels (the xyxy of their unrotated extent decides the check)."""
    from relprop.image import Letterbox, to_input
    from relprop.target import xywh_to_xyxy

    lb = Letterbox.fit(image.shape[:2], graph.imgsz)
    x = to_input(image, lb, graph.dtype, graph.device)
    with torch.no_grad():
        pred = graph.module(x)[0][0]
    scores = pred[4:4 + graph.nc]
    order = scores.amax(0).argsort(descending=True)
    xyxy = pred[:4, order].T if graph.facts.box_format == "xyxy" else xywh_to_xyxy(pred[:4, order].T)
    h0, w0 = image.shape[:2]
    chosen = []
    angles = pred[-1, order].double().cpu().numpy() if graph.facts.box_format == "xywhr" else None
    for i, (b, a) in enumerate(zip(xyxy.double().cpu().numpy(), order.tolist())):
        b = lb.box_to_original(b, clip=False)
        if b[2] > b[0] and b[3] > b[1] and b[0] < w0 and b[1] < h0 and b[2] > 0 and b[3] > 0:
            if angles is not None:  # back to (x, y, w, h, r): the letterbox scales and shifts, it does not rotate
                b = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1], angles[i]])
            chosen.append((b, int(scores[:, a].argmax())))
        if len(chosen) == n:
            break
    return chosen
