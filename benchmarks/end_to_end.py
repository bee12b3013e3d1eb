"""End to end: how far `run_scene` is from "the network is the only cost" (issue 13's targets).

Three rows, each measured in a fresh Python process:

1. the bundled model, at its defaults, on the bundled 3.7 Mpx sample scene;
2. the bundled model, at its defaults, on an 8k x 8k mosaic of real Dubai tiles
   (a GDAL VRT of 16 tiles of 2048 x 2048 cut from the shared images: no pixels
   copied);
3. a near-free model (a 1 x 1 convolution, 5 classes) on an 8k x 8k uint8 scene
   (``--size``), at its recommended overlap (0) and at overlap 0.5, against a
   plain rasterio read + NumPy argmax + tiled DEFLATE write of the same scene in
   the same run (issue 23's target: ``run_scene`` within 1.5x of it).

Each row prints ``run_scene``'s seconds (the model already loaded), scene Mpx/s,
the seconds in the network stage and the fraction of the run it was busy
(``RunReport.network_busy``), peak RSS, and apart the start-up before it
(importing tiler, Keras and TensorFlow, loading the model).

Usage::

    python benchmarks/end_to_end.py [--skip-mosaic] [--skip-free] [--size 8192] [--runtimes auto,keras]
                                    [--models A.keras B.keras]

The ``auto`` runtime is OpenVINO where it is installed; its converted network
is cached (``~/.cache/tiler``), so the first run on a machine converts (1-2 s
more) and the table's rows are those of a second run.

Needs ``../shared/data/dubai_aerial`` for the mosaic row.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import stamp  # benchmarks/_timing.py

ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT.parent / "shared" / "data" / "dubai_aerial"

RUN = r"""
import json, sys, time
t = time.perf_counter()
import tiler
from tiler.model import load_model
model = load_model(sys.argv[3] if sys.argv[3] != "-" else None)  # imports Keras and its backend
startup = time.perf_counter() - t
options = {} if sys.argv[5] == "-" else {"overlap": float(sys.argv[5])}
report = tiler.run_scene(sys.argv[1], sys.argv[2], model=model, overwrite=True, force=True, runtime=sys.argv[4],
                         **options)
print(json.dumps({"startup_s": startup, **report.to_dict()}))
"""

PLAIN = r"""
import json, sys, time
import numpy as np, rasterio
t = time.perf_counter()
with rasterio.open(sys.argv[1]) as src:
    profile = src.profile
    profile.update(count=1, dtype="uint8", compress="deflate", tiled=True, blockxsize=512, blockysize=512)
    with rasterio.open(sys.argv[2], "w", **profile) as dst:
        for _, window in src.block_windows(1):
            data = src.read(window=window).astype(np.float32)
            # The same work as the 1x1 model: a 5-class linear mix, then argmax.
            w = np.linspace(-1, 1, 15, dtype=np.float32).reshape(5, 3)
            dst.write(np.argmax(np.einsum("kc,crs->krs", w, data), axis=0).astype(np.uint8)[None], window=window)
print(json.dumps({"seconds": time.perf_counter() - t}))
"""


def child(code: str, *args) -> dict:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


def mosaic(path: Path, size: int) -> str:
    """A ``size`` x ``size`` VRT mosaic of 2048-px tiles cut from the shared Dubai images."""
    import rasterio

    images = sorted(glob.glob(str(DUBAI / "tile_*" / "images" / "*.jpg")))
    images = [p for p in images if min(rasterio.open(p).shape) >= 1024]
    tile = 1024
    n = size // tile
    sources = []
    for k in range(n * n):
        src = images[k % len(images)]
        i, j = divmod(k, n)
        for band in (1, 2, 3):
            sources.append((band, f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                                  f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" xSize="{tile}" '
                                  f'ySize="{tile}"/><DstRect xOff="{j * tile}" yOff="{i * tile}" xSize="{tile}" '
                                  f'ySize="{tile}"/></SimpleSource>'))
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}">'
                    + "".join(s for bb, s in sources if bb == b) + "</VRTRasterBand>" for b in (1, 2, 3))
    path.write_text(f'<VRTDataset rasterXSize="{n * tile}" rasterYSize="{n * tile}">{bands}</VRTDataset>')
    return str(path)


def synthetic(path: Path, size: int) -> str:
    """A tiled DEFLATE uint8 RGB scene (smooth synthetic content), written in blocks."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from memory_scaling import write_scene

    write_scene(str(path), size)
    return str(path)


def near_free_model(path: Path) -> str:
    """A 1 x 1 convolution, 3 channels -> 5 classes (softmax), saved as a tiler model."""
    import keras

    from tiler.model import save_model

    inp = keras.Input(shape=(None, None, 3))
    out = keras.layers.Conv2D(5, 1, activation="softmax")(inp)
    save_model(keras.Model(inp, out), path, channels=("red", "green", "blue"),
               classes=("a", "b", "c", "d", "e"),
               colours=("#FF0000", "#00FF00", "#0000FF", "#FFFF00", "#00FFFF"),
               normalization={"offset": [127.0] * 3, "scale": [64.0] * 3}, patch_size=256, depth=0,
               inference={"patch_size": 256, "overlap": 0.0, "window": "boxcar"})
    return str(path)


def row(label: str, r: dict) -> str:
    s = r["seconds"]
    busy = r.get("network_busy")
    return (f"| {label} | {r['model'].get('runtime')} | {r['scene']['width']}x{r['scene']['height']} | "
            f"{s['total']:.1f} | "
            f"{r['megapixels_per_second']:.2f} | {s.get('predict', 0.0):.1f} | "
            f"{'' if busy is None else f'{busy:.0%}'} | {r['peak_rss_mb']:.0f} | {r['startup_s']:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--skip-mosaic", action="store_true")
    ap.add_argument("--models", nargs="+", default=["-"], metavar="MODEL",
                    help="model files for the sample and mosaic rows, side by side (default: the bundled one)")
    ap.add_argument("--skip-free", action="store_true", help="leave out the near-free model's rows")
    ap.add_argument("--runtimes", default="auto,keras",
                    help="comma-separated --runtime values, each row run under each (default auto,keras)")
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    runtimes = args.runtimes.split(",")
    print("| run | runtime | scene px | run_scene s | Mpx/s | network s | network busy | peak RSS MB | start-up s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = {m: "bundled model" if m == "-" else Path(m).name for m in args.models}
        for model in args.models:
            for runtime in runtimes:
                r = child(RUN, ROOT / "examples" / "dubai_sample.tif", tmp / "sample.tif", model, runtime, "-")
                print(row(f"{names[model]}, sample scene", r), flush=True)
        if not args.skip_mosaic and DUBAI.exists():
            vrt = mosaic(tmp / "mosaic.vrt", args.size)
            for model in args.models:
                for runtime in runtimes:
                    r = child(RUN, vrt, tmp / "mosaic.tif", model, runtime, "-")
                    print(row(f"{names[model]}, {args.size}² mosaic of Dubai tiles", r), flush=True)
        if args.skip_free:
            return 0
        scene = synthetic(tmp / "scene.tif", args.size)
        model = near_free_model(tmp / "free.keras")
        free = []
        for overlap in ("-", "0.5"):
            for runtime in runtimes:
                r = child(RUN, scene, tmp / "free.tif", model, runtime, overlap)
                what = "its overlap (0)" if overlap == "-" else f"overlap {overlap}"
                print(row(f"1x1 model, {args.size}² uint8, {what}", r), flush=True)
                free.append((what, runtime, r["seconds"]["total"]))
        plain = child(PLAIN, scene, tmp / "plain.tif")
        print()
        print(f"plain rasterio read + argmax + DEFLATE write of the same {args.size}² scene: {plain['seconds']:.1f} s")
        for what, runtime, seconds in free:
            print(f"  1x1 model at {what}, {runtime}: run_scene / plain = {seconds / plain['seconds']:.2f}x "
                  "(target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
