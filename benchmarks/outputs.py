"""Cost of the products: plain tiled GeoTIFF vs Cloud-Optimized GeoTIFF, and streamed polygons.

Class maps of 8k² and 16k² pixels are streamed block by block (512-row strips,
8192-column bands, the engine's order) into the sinks of ``tiler run``; the map
is never held whole. Two class maps:

* ``real``: a real prediction (the bundled model on the bundled sample scene,
  run once here) tiled over the scene;
* ``blobs``: smooth synthetic regions of 5 classes (value-noise argmax).

Table 1 (``--cog``): seconds, peak RSS and disk of the plain write and of the COG
(intermediate tiled file, then GDAL's COG driver); target: COG <= 1.5x the plain
write, memory flat in size.

Table 2 (``--vector``): polygonising the 16k² map, streamed (tiler's
``Polygonizer``: block by block, merged across seams) vs ``rasterio.features.shapes``
on the whole in-memory map; both build every region as a shapely geometry.
Target: streamed within 1.3x of the whole-array time, memory flat (the
whole-array call needs the raster in memory).

Every case runs in a fresh Python process so that its peak RSS is its own.

Usage::

    python benchmarks/outputs.py [--sizes 8192 16384] [--maps real blobs] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _timing import stamp  # benchmarks/_timing.py

STRIP, BAND = 512, 8192
CLASSES = ("a", "b", "c", "d", "e")


def _source(kind: str, work: str):
    """``block(rows, cols) -> uint8 class map`` of an unbounded scene."""
    if kind == "real":
        import rasterio

        with rasterio.open(os.path.join(work, "real.tif")) as ds:
            tile = ds.read(1)
        tile = np.where(tile == 255, 0, tile).astype(np.uint8)
        h, w = tile.shape

        def block(rows, cols):
            return tile[np.arange(*rows) % h][:, np.arange(*cols) % w]

        return block

    rng = np.random.default_rng(0)
    cell = 64  # value noise: random values on a 64-px lattice, bilinear in between, argmax over classes
    lattice = rng.random((len(CLASSES), 1024, 1024)).astype(np.float32)

    def chunk(rows, cols):
        r = np.arange(*rows, dtype=np.float32) / cell
        c = np.arange(*cols, dtype=np.float32) / cell
        r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
        fr, fc = (r - r0)[:, None], (c - c0)[None, :]
        a = lattice[:, r0 % 1024][:, :, c0 % 1024]
        b = lattice[:, r0 % 1024][:, :, (c0 + 1) % 1024]
        cc = lattice[:, (r0 + 1) % 1024][:, :, c0 % 1024]
        d = lattice[:, (r0 + 1) % 1024][:, :, (c0 + 1) % 1024]
        v = (a * (1 - fc) + b * fc) * (1 - fr) + (cc * (1 - fc) + d * fc) * fr
        return v.argmax(0).astype(np.uint8)

    def block(rows, cols):  # in chunks of 32 rows: the generator's own memory stays small
        return np.concatenate([chunk((r, min(rows[1], r + 32)), cols) for r in range(rows[0], rows[1], 32)])

    return block


def _blocks(size: int, block):
    from tiler.engine import Block

    for c0 in range(0, size, BAND):
        for r0 in range(0, size, STRIP):
            rows, cols = (r0, min(size, r0 + STRIP)), (c0, min(size, c0 + BAND))
            cm = block(rows, cols)
            yield Block(rows, cols, np.ones(cm.shape, bool), class_map=cm)


def child(case: str, size: int, kind: str, work: str) -> dict:
    """One measurement, in this (fresh) process."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from tiler.destination import guard_outputs
    from tiler.labels import LabelScheme
    from tiler.sinks import ClassMapSink, OutputContext, Polygonizer, feed

    block = _source(kind, work)
    t_gen = 0.0
    result: dict = {}
    if case in ("plain", "cog"):
        out = os.path.join(work, f"{kind}_{size}_{case}.tif")
        labels = LabelScheme(CLASSES, ("#E41A1C", "#377EB8", "#4DAF4A", "#984EA3", "#FF7F00"))
        ctx = OutputContext(size, size, CRS.from_epsg(32640), Affine(0.5, 0, 300000, 0, -0.5, 2800000), CLASSES,
                            labels=labels)
        seconds: dict = {"write": 0.0}
        with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), guard_outputs({"out": out}, overwrite=True) as guard:
            t = time.perf_counter()
            blocks = _blocks(size, block)

            def timed():
                nonlocal t_gen
                while True:
                    t0 = time.perf_counter()
                    try:
                        b = next(blocks)
                    except StopIteration:
                        return
                    t_gen += time.perf_counter() - t0
                    yield b

            feed(timed(), [ClassMapSink(guard["out"], cog=case == "cog")], ctx, seconds=seconds)
            result["seconds"] = time.perf_counter() - t - t_gen
        result["bytes"] = os.path.getsize(out)
        os.unlink(out)
    elif case == "streamed":
        poly = Polygonizer(size, size, range(len(CLASSES)))
        n = 0
        blocks = _blocks(size, block)
        t = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            b = next(blocks, None)
            t_gen += time.perf_counter() - t0
            if b is None:
                break
            n += len(poly.add(b.class_map(), b.valid, b.rows, b.cols))
        result["seconds"] = time.perf_counter() - t - t_gen
        result["polygons"] = n
    elif case == "whole":
        import rasterio.features
        import shapely

        t0 = time.perf_counter()
        cm = np.empty((size, size), np.uint8)
        for r0 in range(0, size, STRIP):
            cm[r0:r0 + STRIP] = block((r0, min(size, r0 + STRIP)), (0, size))
        t_gen = time.perf_counter() - t0
        t = time.perf_counter()
        n = 0
        for geom, _ in rasterio.features.shapes(cm, connectivity=4):
            rings = geom["coordinates"]
            shapely.Polygon(rings[0], rings[1:])
            n += 1
        result["seconds"] = time.perf_counter() - t
        result["polygons"] = n
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["generate_seconds"] = t_gen
    return result


def _run(case, size, kind, work):
    proc = subprocess.run([sys.executable, __file__, "--child", case, str(size), kind, work],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{case} {size} {kind} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    ap.add_argument("--maps", nargs="+", default=["real", "blobs"], choices=["real", "blobs"])
    ap.add_argument("--vector-size", type=int, default=16384)
    ap.add_argument("--skip-cog", action="store_true")
    ap.add_argument("--skip-vector", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", nargs=4, metavar=("CASE", "SIZE", "MAP", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    print(stamp(), flush=True)
    if args.child:
        case, size, kind, work = args.child
        print(json.dumps(child(case, int(size), kind, work)))
        return

    work = args.workdir or tempfile.mkdtemp(prefix="tiler-bench-outputs-")
    os.makedirs(work, exist_ok=True)
    try:
        if "real" in args.maps and not os.path.exists(os.path.join(work, "real.tif")):
            import tiler

            here = os.path.dirname(os.path.abspath(__file__))
            t = time.perf_counter()
            tiler.run_scene(os.path.join(here, "..", "examples", "dubai_sample.tif"), os.path.join(work, "real.tif"))
            print(f"# predicted the sample scene for the real class map in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr)
        print(f"cpus={os.cpu_count()} strips={STRIP} rows, column bands={BAND} cols, GDAL_CACHEMAX=64 MB")
        if not args.skip_cog:
            print("\nTable 1: class-map GeoTIFF vs Cloud-Optimized GeoTIFF (mode overviews)")
            print(f"{'map':>6} {'size':>11} {'plain s':>8} {'COG s':>8} {'COG/plain':>9} {'plain RSS MB':>12} "
                  f"{'COG RSS MB':>10} {'plain MB':>9} {'COG MB':>8} {'extra disk':>10}")
            for kind in args.maps:
                for size in args.sizes:
                    p = _run("plain", size, kind, work)
                    c = _run("cog", size, kind, work)
                    print(f"{kind:>6} {size:>5}x{size:<5} {p['seconds']:8.1f} {c['seconds']:8.1f} "
                          f"{c['seconds'] / p['seconds']:8.2f}x {p['peak_rss_mb']:12.0f} {c['peak_rss_mb']:10.0f} "
                          f"{p['bytes'] / 2**20:9.1f} {c['bytes'] / 2**20:8.1f} "
                          f"{(c['bytes'] - p['bytes']) / p['bytes']:+9.0%}")
        if not args.skip_vector:
            size = args.vector_size
            print(f"\nTable 2: polygonising a {size}x{size} class map (4-connectivity, every class)")
            print(f"{'map':>6} {'polygons':>9} {'streamed s':>10} {'whole s':>8} {'ratio':>6} "
                  f"{'streamed RSS MB':>15} {'whole RSS MB':>12}")
            for kind in args.maps:
                s = _run("streamed", size, kind, work)
                w = _run("whole", size, kind, work)
                assert s["polygons"] == w["polygons"], (s["polygons"], w["polygons"])
                print(f"{kind:>6} {s['polygons']:9d} {s['seconds']:10.1f} {w['seconds']:8.1f} "
                      f"{s['seconds'] / w['seconds']:5.2f}x {s['peak_rss_mb']:15.0f} {w['peak_rss_mb']:12.0f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
