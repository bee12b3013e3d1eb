"""Registration cost against scene size, and the cost of a registered read.

Builds Sentinel-2 scenes of growing size from the shared 18SVG bands: the 10 m
NIR band (B08, reference) and the 20 m narrow NIR band (B8A) are each tiled
n x n times by a GDAL VRT (a text file: no pixels are copied), and the 20 m
group's georeferencing is moved by a known sub-pixel shift. For each size the
script times ``tiler.registration.register_scene`` (which reads a bounded grid
of windows, so the time should not grow with the scene), checks the recovered
shift, and times reading a window of the reference grid from the 20 m group
through ``Scene.read`` with and without the registration correction (both
resampled by GDAL's warper; target: registered <= 1.5x unregistered).

Usage::

    python benchmarks/registration.py [--tiles 1 4 16] [--window 2048] [--repeat 5]

Needs ``../shared/data/sentinel2_18SVG_20160112`` (relative to the project).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from _timing import median_seconds  # benchmarks/_timing.py
from tiler.registration import register_scene
from tiler.scene import open_scene

S2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sentinel2_18SVG_20160112"
#: Imposed misplacement of the 20 m group, (row, col) in 20 m pixels.
SHIFT = (0.37, -1.21)


def tile_vrt(src: Path, dst: Path, *, col0: int, cols: int, rows: int, n: int, shift=(0.0, 0.0)) -> None:
    """An n x n mosaic of the window (col0, 0, cols, rows) of ``src`` as a VRT, origin moved by ``shift`` pixels."""
    with rasterio.open(src) as ds:
        t, crs, dtype = ds.transform, ds.crs.to_wkt(), ds.dtypes[0]
    # Moving the origin by +shift pixels places every pixel +shift from where it belongs.
    x0 = t.c + (col0 + shift[1]) * t.a
    y0 = t.f + shift[0] * t.e
    gdal_type = {"uint16": "UInt16", "uint8": "Byte", "float32": "Float32"}[dtype]
    sources = []
    for i in range(n):
        for j in range(n):
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
                f'<SrcRect xOff="{col0}" yOff="0" xSize="{cols}" ySize="{rows}"/>'
                f'<DstRect xOff="{j * cols}" yOff="{i * rows}" xSize="{cols}" ySize="{rows}"/></SimpleSource>')
    dst.write_text(
        f'<VRTDataset rasterXSize="{cols * n}" rasterYSize="{rows * n}"><SRS>{crs.replace("<", "&lt;")}</SRS>'
        f"<GeoTransform>{x0}, {t.a}, 0, {y0}, 0, {t.e}</GeoTransform>"
        f'<VRTRasterBand dataType="{gdal_type}" band="1">{"".join(sources)}</VRTRasterBand></VRTDataset>')


def build(folder: Path, n: int) -> str:
    # 10 m column 1 and 20 m column 1 start at the same easting (the 10 m grid
    # starts 10 m east of the 20 m grid): crop both there so tiles stay aligned.
    tile_vrt(S2 / "s2_B08.jp2", folder / f"b08_{n}.vrt", col0=1, cols=1932, rows=1946, n=n)
    tile_vrt(S2 / "s2_B8A.jp2", folder / f"b8a_{n}.vrt", col0=1, cols=966, rows=973, n=n, shift=SHIFT)
    manifest = folder / f"scene_{n}.toml"
    manifest.write_text(
        'reference = "10m"\n'
        f'[groups.10m]\nfiles = ["b08_{n}.vrt"]\nbands = ["nir"]\nscale = 0.0001\nnodata = 0\n'
        f'[groups.20m]\nfiles = ["b8a_{n}.vrt"]\nbands = ["nir2"]\nscale = 0.0001\nnodata = 0\n')
    return str(manifest)



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 16],
                    help="mosaic tiles per side (1: 1932 px, 4: 7728 px, 16: 30912 px)")
    ap.add_argument("--window", type=int, default=2048, help="side of the timed read window, reference pixels")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    if not S2.exists():
        print(f"needs the shared Sentinel-2 scene at {S2}", file=sys.stderr)
        return 2
    print(f"imposed 20 m misplacement (row, col): {SHIFT} px; window {args.window}^2; median of {args.repeat}")
    head = (f"{'scene (10 m px)':>16} {'windows read':>12} {'estimate s':>10} {'found (row, col) 20 m px':>26} "
            f"{'error px':>8} {'unreg. read s':>13} {'reg. read s':>11} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp, rasterio.Env(GDAL_CACHEMAX=64):
        for n in args.tiles:
            path = build(Path(tmp), n)
            with open_scene(path) as sc:
                side = f"{sc.width}x{sc.height}"
                t = time.perf_counter()
                reg = register_scene(sc)
                est = time.perf_counter() - t
                g = reg.groups["20m"]
                found = np.asarray(g.shift_group_px)
                err = float(np.hypot(*(found - SHIFT)))
                r0 = max(0, sc.height // 2 - args.window // 2)
                c0 = max(0, sc.width // 2 - args.window // 2)
                rows, cols = (r0, min(sc.height, r0 + args.window)), (c0, min(sc.width, c0 + args.window))
                unreg = median_seconds(lambda: sc.read(rows, cols, [2]), args.repeat, warm=False)
                reg.apply(sc)
                regd = median_seconds(lambda: sc.read(rows, cols, [2]), args.repeat, warm=False)
            print(f"{side:>16} {len(g.windows):>12} {est:>10.2f} {f'({found[0]:+.3f}, {found[1]:+.3f})':>26} "
                  f"{err:>8.3f} {unreg:>13.3f} {regd:>11.3f} {regd / unreg:>6.2f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
