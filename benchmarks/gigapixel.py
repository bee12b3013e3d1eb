"""A gigapixel scene against the 8192² mosaic: whole-process speed, assembly, temporary disk, memory.

Builds a ``--size`` x ``--size`` RGB GeoTIFF at 0.5 m on a UTM grid (EPSG:32640, Dubai) from the shared
aerial images: 1024-px tiles of tiles 1-7, each copy flipped and rotated at random (seeded), tiled 512 px,
DEFLATE; and the ``--small`` one the same way. Then runs ``tiler run SCENE --out mask.tif [--vector
polygons.gpkg] --report run.json [--workers N]`` on each, in a fresh process, interleaved, and prints per
run: whole-process seconds and scene Mpx/s, the report's stage seconds (the parts' streaming, the assembly,
of it the raster's copy, and its share of the run), the peak RSS of the process tree (the run and its
workers, sampled every 0.2 s),
the peak of the temporary disk in bytes per scene pixel, sampled likewise: of the run's work folder (the
parts), and of every temporary beside the destination (the work folder and the staged outputs, which the
assembly writes while the parts are still there), the outputs' sizes and the polygon count.

Usage::

    python benchmarks/gigapixel.py [--size 32768] [--small 8192] [--workers 1 2] [--vector both] [--seed 0]
                                   [--work FOLDER]

With ``--work`` the scenes are kept in that folder and reused by the next run with the same sizes and seed.

The 32768² scene is 1.07 Gpx; a run of it takes about 20 minutes on a 2-core machine. Needs
``../shared/data/dubai_aerial``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import stamp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT.parent / "shared" / "data" / "dubai_aerial"
TILER = str(Path(sys.executable).with_name("tiler"))
TILE = 1024


def build(path: Path, size: int, seed: int) -> str:
    """The scene: ``size`` x ``size`` px of 1024-px aerial tiles, each flipped and rotated at random."""
    images = [p for p in sorted(glob.glob(str(DUBAI / "tile_*" / "images" / "*.jpg")))
              if min(rasterio.open(p).shape) >= TILE]
    tiles = []
    for p in images:
        with rasterio.open(p) as ds:
            tiles.append(ds.read(window=Window(0, 0, TILE, TILE)))
    rng = np.random.default_rng(seed)
    n = -(-size // TILE)
    partial = path.with_name(f".{path.name}.partial")  # renamed when whole, so a kept scene is never a torn one
    with rasterio.open(partial, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32640",
                       transform=from_origin(300000, 2800000, 0.5, 0.5), BIGTIFF="IF_SAFER") as dst:
        for i in range(n):
            rows = min(TILE, size - i * TILE)
            strip = np.empty((3, rows, size), np.uint8)
            for j in range(n):
                t = tiles[rng.integers(len(tiles))]
                t = np.rot90(t, int(rng.integers(4)), axes=(1, 2))
                if rng.integers(2):
                    t = t[:, :, ::-1]
                cols = min(TILE, size - j * TILE)
                strip[:, :, j * TILE:j * TILE + cols] = t[:, :rows, :cols]
            dst.write(strip, window=Window(0, i * TILE, size, rows))
    os.replace(partial, path)
    return str(path)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _temporary_bytes(folder: Path, outputs: list[Path]) -> int:
    """Bytes in ``folder`` that are not the finished outputs: the work folder, staged and temporary files."""
    names = {p.name for p in outputs}
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            if root == str(folder) and f in names:
                continue
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run(scene: str, out_dir: Path, *, vector: bool, workers: int) -> dict:
    """One ``tiler run`` in a fresh process, sampled for memory and temporary disk."""
    for f in out_dir.iterdir():
        if f.is_file():
            f.unlink()
    mask, polys, report = out_dir / "mask.tif", out_dir / "polygons.gpkg", out_dir / "run.json"
    cmd = [TILER, "run", scene, "--out", str(mask), "--report", str(report), "-q"]
    if vector:
        cmd += ["--vector", str(polys)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    peak = {"rss": 0, "disk": 0, "work": 0}
    work = out_dir / f".{mask.name}.tiler-parts"
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _tree_rss(ps))
            peak["disk"] = max(peak["disk"], _temporary_bytes(out_dir, [mask, polys, report]))
            peak["work"] = max(peak["work"], _temporary_bytes(work, []) if work.is_dir() else 0)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    if rc != 0:
        raise SystemExit(f"tiler run failed with exit {rc}: {' '.join(cmd)}")
    rep = json.loads(report.read_text())
    return {"seconds": seconds, "report": rep, "rss_mb": peak["rss"] / 2**20, "temp_bytes": peak["disk"],
            "work_bytes": peak["work"],
            "mask_mb": mask.stat().st_size / 1e6, "vector_mb": polys.stat().st_size / 1e6 if vector else None}


def row(name: str, size: int, vector: bool, workers: int, r: dict) -> str:
    rep = r["report"]
    px = size * size
    parts = rep.get("parts") or {}
    assembly = parts.get("assembly_seconds") or 0.0
    raster = rep["seconds"].get("assembly_raster", 0.0)
    vector_mb = "-" if r["vector_mb"] is None else f"{r['vector_mb']:.0f}"
    polygons = sum((rep.get("vector") or {}).get("features", {}).values()) if vector else "-"
    cells = [name, "yes" if vector else "no", workers, f"{r['seconds']:.1f}", f"{px / 1e6 / r['seconds']:.2f}",
             parts.get("total", 1), f"{assembly:.1f}", f"{raster:.1f}", f"{assembly / r['seconds']:.1%}",
             f"{r['rss_mb']:.0f}",
             f"{r['work_bytes'] / px:.2f}", f"{r['temp_bytes'] / px:.2f}", f"{r['mask_mb']:.1f}", vector_mb,
             polygons]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32768)
    ap.add_argument("--small", type=int, default=8192)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--vector", choices=["yes", "no", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None,
                    help="folder that keeps the built scenes between runs (reused: scene_<size>_<seed>.tif); "
                         "the outputs go to a temporary folder inside it (default: all in a temporary folder)")
    args = ap.parse_args()
    print(stamp())
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        keep = Path(args.work) if args.work else tmp
        scenes = {}
        for size in (args.small, args.size):
            path = keep / f"scene_{size}_{args.seed}.tif"
            scenes[size] = str(path) if path.exists() else build(path, size, args.seed)
        print(f"# scenes built in {time.perf_counter() - t:.0f} s: "
              + ", ".join(f"{s}² ({os.path.getsize(p) / 1e9:.2f} GB)" for s, p in scenes.items()))
        print("| scene | vector | workers | seconds | scene Mpx/s | parts | assembly s | of it raster s "
              "| assembly share | peak RSS MB | work folder B/px (peak) | all temporaries B/px (peak) | mask MB "
              "| polygons MB | polygons |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        out = tmp / "out"
        out.mkdir()
        vectors = {"yes": [True], "no": [False], "both": [False, True]}[args.vector]
        for vector in vectors:
            for workers in args.workers:
                for size in (args.small, args.size):  # interleaved: the mosaic, then the big scene
                    r = run(scenes[size], out, vector=vector, workers=workers)
                    print(row(f"{size}²", size, vector, workers, r), flush=True)


if __name__ == "__main__":
    main()
