"""Peak memory and throughput of `tiler run` against scene size.

Writes synthetic 3-band uint8 scenes (tiled, DEFLATE) of 2k², 8k² and 16k²
pixels, then streams each through ``tiler.run_scene`` with a tiny real U-Net in
a fresh Python process, so that each peak RSS is that run's own. Prints one
table row per size; the target is that the 16k² peak RSS stays within 1.3x of
the 2k² one (DESIGN.md, invariant 4).

Usage::

    python benchmarks/memory_scaling.py [--sizes 2048 8192 16384] [--band-width 8192] [--workdir DIR]

The scenes (about 0.1-0.8 GB each, compressed) are written to ``--workdir``
(default: a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _timing import stamp  # benchmarks/_timing.py

CHILD = r"""
import json, sys
import tiler
report = tiler.run_scene(sys.argv[1], sys.argv[2], model=sys.argv[3], overlap=float(sys.argv[4]),
                         batch_size=int(sys.argv[5]), band_width=int(sys.argv[6]), overwrite=True)
print(json.dumps(report.to_dict()))
"""


def write_scene(path: str, size: int, block: int = 512) -> None:
    """A smooth synthetic RGB scene, written strip by strip (bounded memory)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32618", "transform": Affine(0.5, 0, 400000, 0, -0.5, 4200000),
               "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    cols = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, block):
            rows = np.arange(r0, min(size, r0 + block), dtype=np.float32)[:, None]
            data = np.stack([
                127 + 100 * np.sin(rows / 97.0) * np.cos(cols / 53.0),
                127 + 100 * np.sin((rows + cols) / 211.0),
                127 + 100 * np.cos(rows / 31.0 + cols / 77.0),
            ]).astype(np.uint8)
            ds.write(data, window=Window(0, r0, size, data.shape[1]))


def tiny_model(path: str, patch_size: int) -> None:
    """A small real U-Net (depth 2, 8 base filters, 3 classes), random weights."""
    import keras

    from tiler.model import build_unet, save_model

    keras.utils.set_random_seed(0)
    net = build_unet(3, 3, depth=2, base_filters=8, dropout=0.0)
    save_model(net, path, channels=("red", "green", "blue"), classes=("a", "b", "c"),
               colours=("#FF0000", "#00FF00", "#0000FF"),
               normalization={"offset": [127.0] * 3, "scale": [64.0] * 3},
               patch_size=patch_size, depth=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--band-width", type=int, default=8192,
                    help="columns per column band (the engine's buffers are as wide as a band)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    print(stamp(), flush=True)

    work = args.workdir or tempfile.mkdtemp(prefix="tiler-bench-")
    os.makedirs(work, exist_ok=True)
    try:
        model = os.path.join(work, "tiny.keras")
        tiny_model(model, args.patch_size)
        rows = []
        for size in args.sizes:
            scene = os.path.join(work, f"scene_{size}.tif")
            if not os.path.exists(scene):
                t = time.perf_counter()
                write_scene(scene, size)
                print(f"# wrote {scene} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            out = os.path.join(work, f"mask_{size}.tif")
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, scene, out, model, str(args.overlap),
                                   str(args.batch_size), str(args.band_width)],
                                  capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            if proc.returncode:
                sys.exit(f"run failed for {size}: {proc.stderr[-2000:]}")
            rep = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((size, rep, wall))
            os.unlink(out)
        base = rows[0][1]["peak_rss_mb"]
        import keras

        print(f"backend={keras.backend.backend()} patch={args.patch_size} overlap={args.overlap} "
              f"batch={args.batch_size} band_width={args.band_width} cpus={os.cpu_count()}")
        print(f"{'scene':>12} {'Mpx':>8} {'patches':>8} {'run s':>8} {'Mpx/s':>8} {'predict s':>10} "
              f"{'peak RSS MB':>12} {'vs first':>9}")
        for size, rep, wall in rows:
            mpx = size * size / 1e6
            print(f"{size:>5}x{size:<6} {mpx:8.1f} {rep['patches']['predicted']:8d} "
                  f"{rep['seconds']['total']:8.1f} {rep['megapixels_per_second']:8.2f} "
                  f"{rep['seconds']['predict']:10.1f} {rep['peak_rss_mb']:12.1f} "
                  f"{rep['peak_rss_mb'] / base:8.2f}x")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
