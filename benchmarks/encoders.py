"""Models side by side on Dubai tile 7: encoder, size, tile-7 mean IoU, weakest class, training time, Mpx/s.

Each model file is run with ``tiler.pipeline.run_scene`` at its own recommended
patch, overlap and window (``tiler run``'s defaults) over every whole image of
the shared Dubai tile 7 (never trained on), the class maps scored by
``tiler.evaluate`` against the tile's masks; the scene megapixels per second
are those of ``run_scene`` with the model loaded and warmed up, all models in
this one process, one after the other. Parameters and file size come from the
model file, the encoder, epochs and training minutes from its training record.

Usage::

    python benchmarks/encoders.py MODEL.keras [MODEL.keras ...] [--images N] [--quality standard,best]
        [--precision float32,int8]

``--quality`` and ``--precision`` give a row per model, preset (``tiler run --quality``) and precision.

A second table compares every other model's row with the first model's row of the same preset and
precision, on the same images, paired: the difference in
mean IoU, on how many images the row's own mean IoU is higher, and a 95 % interval of the
difference by the paired bootstrap over images (the images resampled with replacement, the same
resample for both rows, each resample's confusion matrices summed and scored; 10,000 resamples;
Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13). An interval that includes 0
says the difference is within the image-to-image spread of this tile.

Needs ``../shared/data/dubai_aerial/tile_7`` (relative to the project).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _timing import stamp  # benchmarks/_timing.py

ROOT = Path(__file__).resolve().parents[1]
TILE = ROOT.parent / "shared" / "data" / "dubai_aerial" / "tile_7"
CLASSES = ROOT / "examples" / "dubai_classes.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--images", type=int, default=None, help="only the first N images (default all)")
    ap.add_argument("--quality", default="standard", help="comma-separated --quality presets")
    ap.add_argument("--precision", default="float32", help="comma-separated --precision values")
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    if not TILE.exists():
        print(f"needs the shared Dubai tile 7 at {TILE}", file=sys.stderr)
        return 2
    missing = [m for m in args.models if not os.path.isfile(m)]
    if missing:
        print(f"no such model file: {', '.join(missing)}; pass tiler .keras model files", file=sys.stderr)
        return 2
    import numpy as np
    import rasterio

    from tiler.evaluate import evaluate_masks
    from tiler.labels import LabelScheme
    from tiler.metrics import scores as mean_scores
    from tiler.model import load_model
    from tiler.pipeline import run_scene

    images = sorted((TILE / "images").glob("*.jpg"))[:args.images]
    class_names = LabelScheme.from_file(CLASSES).names
    pixels = 0
    for path in images:
        with rasterio.open(path) as ds:
            pixels += ds.width * ds.height
    print(f"{len(images)} images of {TILE.name}, {pixels / 1e6:.1f} Mpx; each model at its recommended patch, "
          f"overlap and window; cpus={os.cpu_count()}")
    print()
    print("| model | encoder | params (M) | MB | patch / overlap | quality | precision | tile-7 mean IoU | "
          "weakest class (IoU) | epochs | training min | scene Mpx/s |")
    print("|---|---|---:|---:|---|---|---|---:|---|---:|---:|---:|")
    rows: list[tuple[int, str, str, np.ndarray]] = []  # (model, quality, precision, per-image (n, K, K) matrices)
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(args.models):
            tm = load_model(model)
            patch, overlap, window = tm.info.recommended()
            training = tm.info.training or {}
            config = training.get("config", {})
            params = sum(int(np.prod(w.shape)) for w in tm.keras_model.weights)
            for quality in args.quality.split(","):
                for precision in args.precision.split(","):
                    options = {"quality": quality, "precision": precision}
                    run_scene(str(images[0]), os.path.join(tmp, "warm.tif"), model=tm, overwrite=True,
                              **options)  # converts, traces
                    out = Path(tmp) / f"m{k}-{quality}-{precision}"
                    out.mkdir()
                    t = time.perf_counter()
                    for path in images:
                        run_scene(str(path), str(out / f"{path.stem}.tif"), model=tm, **options)
                    seconds = time.perf_counter() - t
                    per_image = np.array([evaluate_masks(out / f"{path.stem}.tif", next((TILE / "masks").glob(
                        f"{path.stem}.*")), classes=str(CLASSES))["confusion_matrix"] for path in images], np.int64)
                    rows.append((k, quality, precision, per_image))
                    scores = mean_scores(per_image.sum(0), class_names)  # what evaluate_masks gives for the folder
                    per_class = {c: v for c, v in scores["iou"].items() if v is not None}
                    weakest = min(per_class, key=per_class.get)
                    print(f"| {Path(model).name} | {config.get('encoder') or 'none (U-Net from scratch)'} | "
                          f"{params / 1e6:.2f} | {os.path.getsize(model) / 1e6:.1f} | {patch} / {overlap:g} | "
                          f"{quality} | {precision} | {scores['mean_iou']:.3f} | {weakest} "
                          f"({per_class[weakest]:.3f}) | {training.get('epochs_run', '-')} | "
                          f"{training.get('minutes', '-')} | {pixels / 1e6 / seconds:.2f} |", flush=True)
    if len(args.models) > 1:
        print()
        _paired(rows, [Path(m).name for m in args.models])
    return 0


def _mean_iou(cm) -> float:
    """Mean IoU of one (K, K) confusion matrix, by :func:`tiler.metrics.scores`."""
    from tiler.metrics import scores

    return scores(cm)["mean_iou"]


def _paired(rows, names, resamples: int = 10_000, seed: int = 0) -> None:
    """Print each model's rows against the first model's of the same preset and precision (module docstring)."""
    import numpy as np

    base = {(quality, precision): cms for k, quality, precision, cms in rows if k == 0}
    n = len(next(iter(base.values())))
    pick = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    print(f"Paired against {names[0]} at the same quality and precision, over {n} images "
          f"({resamples} bootstrap resamples):")
    print()
    print("| model | quality | precision | mean IoU difference | images better | 95 % interval of the difference |")
    print("|---|---|---|---:|---:|---|")
    for k, quality, precision, cms in rows:
        ref = base.get((quality, precision))
        if k == 0 or ref is None:
            continue
        diff = _mean_iou(cms.sum(0)) - _mean_iou(ref.sum(0))
        better = sum(_mean_iou(a) > _mean_iou(b) for a, b in zip(cms, ref))
        boot = [_mean_iou(cms[i].sum(0)) - _mean_iou(ref[i].sum(0)) for i in pick]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"| {names[k]} | {quality} | {precision} | {diff:+.3f} | {better} of {n} | {lo:+.3f} to {hi:+.3f} |",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
