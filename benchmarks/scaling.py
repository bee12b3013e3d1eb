"""Scale-out: an archive of small scenes, and one large scene in parts, on dask workers.

Table 1 (archive): N small real scenes (crops of the Dubai aerial images in
``../shared/data``, written as GeoTIFFs) with a tiny RGB U-Net: a shell loop of
``tiler run`` (start-up and model load paid per scene), then ``tiler batch``
with 1 and 2 workers, first with the cores shared out between the workers
(the default), then with every worker pinned to one thread. Targets: batch on
1 worker >= 3x the shell loop; 2 workers >= 1.7x 1 worker.

Table 2 (one scene): a large scene (a real aerial image tiled to SIZE x SIZE)
with a tiny model: one stream (``--parts 1``), one process in 4 resumable parts
(what ``--parts auto`` gives a 16k scene), ``--workers 2``; then the one stream
and the 2 workers with one thread each. Targets: >= 1.7x; the assembly <= 10 %
of the one-process run; all outputs identical.

Table 3 (scheduler): dask's overhead per task on a LocalCluster (a no-op task
submitted one at a time, and in bulk), from which the README works out the
overhead of 10,000 scenes on 100 GPU workers.

Every run is a fresh ``tiler`` process, timed from the shell's point of view
(start-up included). Figures depend on the machine: compare ratios measured
side by side in one run.

Usage::

    python benchmarks/scaling.py [--scenes 20] [--crop 1024] [--size 16384] [--workdir DIR] [--skip-archive]
        [--skip-scene] [--skip-scheduler]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from _timing import stamp  # benchmarks/_timing.py

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "dubai_aerial")


#: Pins every worker's numeric libraries to one thread (they otherwise share the cores out).
ONE_THREAD = {k: "1" for k in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _tiler(*args, env=None) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tiler.cli", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    return time.perf_counter() - t


def _model(path: str, *, depth: int, filters: int, patch: int) -> str:
    import keras

    from tiler.domain import ChannelDomain, InputDomain
    from tiler.model import build_unet, save_model

    keras.utils.set_random_seed(0)
    net = build_unet(3, 3, depth=depth, base_filters=filters, dropout=0.0)
    save_model(net, path, channels=("red", "green", "blue"), classes=("a", "b", "c"),
               colours=["#FF0000", "#00FF00", "#0000FF"],
               normalization={"offset": [100.0] * 3, "scale": [50.0] * 3}, patch_size=patch, depth=depth,
               domain=InputDomain(tuple(ChannelDomain(c, "uint8", 0.0, 255.0) for c in ("red", "green", "blue"))))
    return path


def _crops(work: str, n: int, crop: int) -> list[str]:
    """``n`` crops of ``crop`` x ``crop`` pixels from different real aerial images, as GeoTIFFs."""
    import rasterio

    images = sorted(glob.glob(os.path.join(SHARED, "tile_*", "images", "*.jpg")))
    big = []
    for p in images:
        with rasterio.open(p) as ds:
            if ds.width >= crop and ds.height >= crop:
                big.append(p)
    if not big:
        raise SystemExit(f"no aerial image of at least {crop} px in {SHARED}")
    out = []
    for i in range(n):
        src = big[i % len(big)]
        with rasterio.open(src) as ds:
            k = i // len(big)
            r0, c0 = (k * 97) % (ds.height - crop + 1), (k * 131) % (ds.width - crop + 1)
            data = ds.read(window=rasterio.windows.Window(c0, r0, crop, crop))
        path = os.path.join(work, "archive", f"scene_{i:02d}.tif")
        with rasterio.open(path, "w", driver="GTiff", width=crop, height=crop, count=3, dtype="uint8",
                           tiled=True, blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32640",
                           transform=rasterio.transform.from_origin(300000 + 1000 * i, 2800000, 0.5, 0.5)) as dst:
            dst.write(data)
        out.append(path)
    return out


def archive(work: str, n: int, crop: int) -> None:
    os.makedirs(os.path.join(work, "archive"), exist_ok=True)
    model = _model(os.path.join(work, "tiny.keras"), depth=2, filters=8, patch=128)
    scenes = _crops(work, n, crop)
    rows = []
    loop_dir = os.path.join(work, "loop")
    os.makedirs(loop_dir, exist_ok=True)
    t = time.perf_counter()
    for s in scenes:
        _tiler("run", s, "--out", os.path.join(loop_dir, os.path.basename(s)), "--model", model, "-q")
    loop = time.perf_counter() - t
    rows.append(("shell loop of `tiler run`", loop))
    for pinned in (False, True):
        for workers in (1, 2):
            out = os.path.join(work, f"batch{workers}{pinned}")
            shutil.rmtree(out, ignore_errors=True)
            label = f"`tiler batch --workers {workers}`" + (", 1 thread per worker" if pinned else "")
            rows.append((label, _tiler("batch", *scenes, "--out-dir", out, "--model", model, "--workers", workers,
                                       "-q", env=ONE_THREAD if pinned else None)))
    one = rows[1][1]
    print(f"\n### Archive: {n} real scenes of {crop}x{crop} px, tiny U-Net (depth 2, 8 filters, patch 128)\n")
    print("| run | seconds | scenes/min | speed-up |")
    print("|---|---:|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} | {60 * n / sec:.1f} | {loop / sec:.2f}x vs loop, {one / sec:.2f}x vs 1 worker |")
    print(f"\nbatch on 1 worker vs shell loop: {loop / one:.2f}x (target >= 3x); "
          f"2 workers vs 1: {one / rows[2][1]:.2f}x (target >= 1.7x); with 1 thread per worker "
          f"{rows[3][1] / rows[4][1]:.2f}x")


def _big_scene(work: str, size: int) -> str:
    """A ``size`` x ``size`` GeoTIFF tiled from a real aerial image (mirrored so the seams are smooth)."""
    import rasterio

    src = sorted(glob.glob(os.path.join(SHARED, "tile_*", "images", "*.jpg")))[0]
    with rasterio.open(src) as ds:
        tile = ds.read()
    tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    path = os.path.join(work, f"scene_{size}.tif")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, crs="EPSG:32640",
                       transform=rasterio.transform.from_origin(300000, 2800000, 0.5, 0.5)) as dst:
        h, w = tile.shape[1:]
        for r0 in range(0, size, 512):
            rows = np.arange(r0, min(size, r0 + 512)) % h
            band = tile[:, rows][:, :, np.arange(size) % w]
            dst.write(band, window=rasterio.windows.Window(0, r0, size, len(rows)))
    return path


def one_scene(work: str, size: int) -> None:
    import rasterio

    model = _model(os.path.join(work, "tinier.keras"), depth=1, filters=4, patch=256)
    scene = _big_scene(work, size)
    base = ["--model", model, "--overlap", "0.25", "--overwrite", "-q"]
    runs = [("`tiler run --parts 1` (one stream, not resumable)", ["--parts", "1"], None),
            ("`tiler run` (one process, 4 resumable parts)", ["--parts", "4"], None),
            ("`tiler run --workers 2` (4 parts)", ["--workers", "2", "--parts", "4"], None),
            ("`tiler run --parts 1`, 1 thread", ["--parts", "1"], ONE_THREAD),
            ("`tiler run --workers 2` (4 parts), 1 thread per worker", ["--workers", "2", "--parts", "4"],
             ONE_THREAD)]
    rows = []
    for k, (name, extra, env) in enumerate(runs):
        out, report = os.path.join(work, f"run{k}.tif"), os.path.join(work, f"run{k}.json")
        sec = _tiler("run", scene, "--out", out, "--report", report, *base, *extra, env=env)
        with open(report) as fh:
            rep = json.load(fh)
        rows.append((name, sec, (rep.get("parts") or {}).get("assembly_seconds"), out))
    with rasterio.open(rows[0][3]) as a:
        same = True
        for _, _, _, other in rows[1:]:
            with rasterio.open(other) as b:
                same &= all(np.array_equal(a.read(1, window=w), b.read(1, window=w)) for _, w in a.block_windows(1))
    print(f"\n### One scene: {size}x{size} px, tinier U-Net (depth 1, 4 filters, patch 256, overlap 0.25)\n")
    print("| run | seconds | Mpx/s | assembly s | speed-up vs the same threads in one stream |")
    print("|---|---:|---:|---:|---:|")
    mpx = size * size / 1e6
    for k, (name, sec, assembly, _) in enumerate(rows):
        ref = rows[3][1] if k >= 3 else rows[0][1]
        print(f"| {name} | {sec:.1f} | {mpx / sec:.2f} | {'' if assembly is None else f'{assembly:.1f}'} | "
              f"{ref / sec:.2f}x |")
    print(f"\n2 workers vs one process: {rows[0][1] / rows[2][1]:.2f}x; with 1 thread each: "
          f"{rows[3][1] / rows[4][1]:.2f}x (target >= 1.7x); assembly {rows[2][2]:.1f} s = "
          f"{100 * rows[2][2] / rows[0][1]:.1f} % of the one-process run (target <= 10 %); "
          f"all outputs identical: {same}")


def _noop(x):
    return x


def scheduler(work: str) -> None:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.submit(_noop, 0).result()
        n = 200
        t = time.perf_counter()
        for i in range(n):
            client.submit(_noop, i, pure=False).result()
        serial = (time.perf_counter() - t) / n
        n_bulk = 2000
        t = time.perf_counter()
        client.gather(client.map(_noop, range(n_bulk), pure=False))
        bulk = (time.perf_counter() - t) / n_bulk
    print("\n### dask scheduler overhead (LocalCluster, 2 workers)\n")
    print("| measure | ms per task |")
    print("|---|---:|")
    print(f"| no-op task, submitted and awaited one at a time (round trip) | {1000 * serial:.2f} |")
    print(f"| no-op tasks, {n_bulk} submitted at once (throughput) | {1000 * bulk:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--crop", type=int, default=1024)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-archive", action="store_true")
    ap.add_argument("--skip-scene", action="store_true")
    ap.add_argument("--skip-scheduler", action="store_true")
    args = ap.parse_args()
    print(stamp(), flush=True)
    work = args.workdir or tempfile.mkdtemp(prefix="tiler-scaling-")
    os.makedirs(work, exist_ok=True)
    print(f"cores: {os.cpu_count()}; work folder {work}")
    try:
        if not args.skip_scheduler:
            scheduler(work)
        if not args.skip_archive:
            archive(work, args.scenes, args.crop)
        if not args.skip_scene:
            one_scene(work, args.size)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
