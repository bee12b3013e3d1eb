"""OpenVINO int8 post-training quantisation (NNCF) of a model against its float32 network, on this CPU.

The model's network (the Keras graph behind its channel normalisation) is converted by OpenVINO, then
quantised by NNCF (``nncf.quantize``) with each variant's settings, calibrated on ``--calibration`` random
patches of the shared Dubai tiles 1-6 (the bundled model's training images). Every variant is compiled for
the CPU with the float32 network beside it and run on the same ``--patches`` random patches of tile 7 (never
trained on); the table gives patches per second, the speed-up, the share of pixels whose class (argmax) is
the float32 network's, the largest change of a probability, and the mean IoU of the patches against tile
7's masks (the same pixels for every row; the unlabelled ones ignored), with its change.

The issue's bar for offering int8 (``--precision int8``): mean IoU on tile 7 drops by at most 0.005 and at
least 99 % of pixels keep their class.

Usage::

    python benchmarks/int8.py [--model FILE] [--patch 192] [--calibration 512] [--patches 128]

Needs ``nncf`` (``pip install nncf``) and ``../shared/data/dubai_aerial``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
from _timing import stamp  # benchmarks/_timing.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT.parent / "shared" / "data" / "dubai_aerial"
CLASSES = ROOT / "examples" / "dubai_classes.json"


def _patches(rng, images: list[str], n: int, size: int, scheme=None):
    """``n`` random ``size``² windows of the images, ``(n, size, size, 3)`` float32, and with ``scheme`` their
    masks' windows as class indices, ``(n, size, size)`` (``tiler.labels.read_mask`` and the scheme's decode,
    as ``tiler evaluate`` reads them)."""
    import rasterio

    from tiler.labels import read_mask

    out, truth = [], []
    for _ in range(n):
        path = images[rng.integers(len(images))]
        with rasterio.open(path) as ds:
            r, c = int(rng.integers(0, ds.height - size)), int(rng.integers(0, ds.width - size))
            out.append(ds.read(window=((r, r + size), (c, c + size))).transpose(1, 2, 0).astype(np.float32))
        if scheme is not None:
            mask = read_mask(path.replace("/images/", "/masks/").rsplit(".", 1)[0] + ".png")
            truth.append(scheme.decode(mask[:, r:r + size, c:c + size]))
    return np.stack(out), (np.stack(truth) if truth else None)


def _mean_iou(pred: np.ndarray, truth: np.ndarray, k: int, ignore: int) -> float:
    valid = truth != ignore
    scores = []
    for c in range(k):
        inter = np.count_nonzero((pred == c) & (truth == c) & valid)
        union = np.count_nonzero(((pred == c) | (truth == c)) & valid)
        if union:
            scores.append(inter / union)
    return float(np.mean(scores))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--patch", type=int, default=192)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calibration", type=int, default=512, help="calibration patches")
    ap.add_argument("--patches", type=int, default=128, help="test patches of tile 7")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    if not DUBAI.exists():
        print(f"needs the shared Dubai tiles at {DUBAI}", file=sys.stderr)
        return 2
    try:
        import nncf
    except ImportError:
        print("needs nncf: pip install nncf", file=sys.stderr)
        return 2
    import openvino as ov

    from tiler.labels import IGNORE, LabelScheme
    from tiler.model import DEFAULT_MODEL_PATH, load_model

    tm = load_model(args.model or DEFAULT_MODEL_PATH)
    scheme = LabelScheme.from_file(CLASSES)
    offset, scale = np.asarray(tm.info.offset, np.float32), np.asarray(tm.info.scale, np.float32)
    rng = np.random.default_rng(args.seed)
    train = sorted(glob.glob(str(DUBAI / "tile_[1-6]" / "images" / "*.jpg")))
    test = sorted(glob.glob(str(DUBAI / "tile_7" / "images" / "*.jpg")))
    calibration = (_patches(rng, train, args.calibration, args.patch)[0] - offset) / scale
    x, truth = _patches(rng, test, args.patches, args.patch, scheme)
    x = (x - offset) / scale
    b = args.batch
    shape = (b, args.patch, args.patch, 3)
    core = ov.Core()
    base = ov.convert_model(tm.keras_model, example_input=np.zeros(shape, np.float32))
    dataset = nncf.Dataset([calibration[i:i + b] for i in range(0, len(calibration) - b + 1, b)])
    variants = {
        "float32": None,
        "int8, NNCF defaults (performance preset)": {},
        "int8, mixed preset": {"preset": nncf.QuantizationPreset.MIXED},
        "int8, mixed preset, full bias correction": {"preset": nncf.QuantizationPreset.MIXED,
                                                     "fast_bias_correction": False},
    }
    rows, reference = [], None
    for name, settings in variants.items():
        t = time.perf_counter()
        model = base if settings is None else nncf.quantize(base, dataset, subset_size=len(calibration) // b,
                                                            **settings)
        quantise_s = time.perf_counter() - t
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        outs = []
        for i in range(0, len(x) - b + 1, b):
            request.infer({0: x[i:i + b]})
            outs.append(np.array(request.get_output_tensor(0).data, np.float32))
        t = time.perf_counter()
        for _ in range(args.repeat):
            for i in range(0, len(x) - b + 1, b):
                request.infer({0: x[i:i + b]})
        seconds = time.perf_counter() - t
        prob = np.concatenate(outs)
        pred = prob.argmax(-1)
        if reference is None:
            reference = prob
        n = len(prob)
        rows.append((name, quantise_s if settings is not None else None, args.repeat * n / seconds,
                     float((pred == reference.argmax(-1)).mean()), float(np.abs(prob - reference).max()),
                     _mean_iou(pred, truth[:n], len(tm.info.classes), IGNORE)))
    print(f"{args.model or 'bundled model'}; calibration {args.calibration} patches of tiles 1-6, test {args.patches} "
          f"patches of tile 7, {args.patch} px, batch {b}; cpus={os.cpu_count()}")
    print()
    print("| network | quantise s | patches/s | speed-up | pixels keeping their class | max abs diff | "
          "mean IoU (patches) | change |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, q, speed, agree, diff, iou in rows:
        print(f"| {name} | {'-' if q is None else f'{q:.0f}'} | {speed:.1f} | {speed / rows[0][2]:.2f}x | "
              f"{agree:.2%} | {diff:.3f} | {iou:.3f} | {iou - rows[0][5]:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
