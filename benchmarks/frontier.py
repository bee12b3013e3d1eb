"""The quality-speed frontier of a model: mean IoU and scene Mpx/s per patch size, overlap and window.

Segments every image of a validation folder (default: the shared Dubai tile 7,
never seen in training) with ``tiler.pipeline.run_scene`` for each patch size x
overlap x blending window, scores the class maps with ``tiler.evaluate`` against
the tile's masks, and prints one table row per setting: mean IoU, the weakest
class, the patches predicted and the scene megapixels per second of
``run_scene`` (one process, the model loaded once and warmed up).

The window changes only the blending weights, never the patches or the network:
each (patch, overlap) pair is predicted once with the first window, its
network outputs kept in memory and replayed for the other window, whose row
reports the first window's timing (the blender's cost does not depend on the
weights it multiplies by).

Overlap is the fraction of the patch side shared by neighbouring patches; the
stride in pixels is ``patch - round(patch * overlap)`` (printed).

Usage::

    python benchmarks/frontier.py [--patches 192 384 768] [--overlaps 0.5 0.25 0.125]
                                  [--windows spline hann] [--images N] [--model FILE]

Needs ``../shared/data/dubai_aerial/tile_7`` (relative to the project).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from _timing import stamp  # benchmarks/_timing.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
TILE = ROOT.parent / "shared" / "data" / "dubai_aerial" / "tile_7"
CLASSES = ROOT / "examples" / "dubai_classes.json"


class ReplayPredictor:
    """Wraps a predictor: records its outputs per batch (by the batch's bytes) and replays them."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batch_size, self.classes = inner.batch_size, inner.classes
        self.cache: dict = {}
        self.calls = self.patches = 0

    @property
    def runtime(self):
        """The wrapped predictor's runtime (for the run report)."""
        return self.inner.runtime

    def __call__(self, patches, out=None):
        key = hashlib.blake2b(patches.tobytes(), digest_size=16).digest() + bytes(str(patches.shape), "ascii")
        if key not in self.cache:
            self.cache[key] = self.inner(patches).copy()
            self.calls += 1
            self.patches += len(patches)
        if out is not None:
            out[...] = self.cache[key]
            return out
        return self.cache[key]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, nargs="+", default=[192, 384, 768])
    ap.add_argument("--overlaps", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ap.add_argument("--windows", nargs="+", default=["spline", "hann"])
    ap.add_argument("--images", type=int, default=None, help="only the first N images (default all)")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--runtime", default="auto", help="--runtime of tiler run (auto, keras, openvino)")
    ap.add_argument("--precision", default="float32", help="--precision of tiler run")
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    if not TILE.exists():
        print(f"needs the shared Dubai tile 7 at {TILE}", file=sys.stderr)
        return 2

    import numpy as np
    import rasterio

    from tiler.config import InferenceConfig
    from tiler.evaluate import evaluate_masks
    from tiler.model import load_model
    from tiler.pipeline import predictor_for, run_scene

    images = sorted((TILE / "images").glob("*.jpg"))[:args.images]
    pixels = 0
    for path in images:
        with rasterio.open(path) as ds:
            pixels += ds.width * ds.height
    tm = load_model(args.model)
    print(f"model {args.model or 'bundled'}: training patch {tm.info.patch_size}, classes "
          f"{', '.join(tm.info.classes)}; {len(images)} images of {TILE.name}, {pixels / 1e6:.1f} Mpx; "
          f"batch {args.batch_size}; runtime {args.runtime}, {args.precision}")
    print()
    print("| patch px | overlap | stride px | window | mean IoU | weakest class (IoU) | patches | s | Mpx/s |")
    print("|---:|---:|---:|---|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for patch in args.patches:
            for overlap in args.overlaps:
                inference = InferenceConfig(batch_size=args.batch_size, runtime=args.runtime,
                                            precision=args.precision)
                key = tuple(inference.network_options().items())  # predictor_for's key of a model's predictors
                replay = ReplayPredictor(predictor_for(tm, inference))
                # Untimed: the first batch of a new patch shape traces the model.
                replay.inner(np.zeros((args.batch_size, len(tm.info.channels), patch, patch), np.float32))
                tm.predictors[key] = replay
                timed = None
                for window in args.windows:
                    out_dir = Path(tmp) / f"{patch}_{overlap}_{window}"
                    out_dir.mkdir()
                    t = time.perf_counter()
                    for path in images:
                        run_scene(str(path), str(out_dir / f"{path.stem}.tif"), model=tm, patch_size=patch,
                                  overlap=overlap, window=window, batch_size=args.batch_size,
                                  runtime=args.runtime, precision=args.precision)
                    seconds = time.perf_counter() - t
                    if timed is None:
                        timed = (seconds, replay.patches)
                    scores = evaluate_masks(out_dir, TILE / "masks", classes=str(CLASSES))
                    per_class = {k: v for k, v in scores["iou"].items() if v is not None}
                    weakest = min(per_class, key=per_class.get)
                    stride = patch - int(round(patch * overlap))
                    print(f"| {patch} | {overlap:g} | {stride} | {window} | {scores['mean_iou']:.3f} | "
                          f"{weakest} ({per_class[weakest]:.3f}) | {timed[1]} | {timed[0]:.1f} | "
                          f"{pixels / 1e6 / timed[0]:.2f} |", flush=True)
                tm.predictors[key] = replay.inner
    return 0


if __name__ == "__main__":
    sys.exit(main())
