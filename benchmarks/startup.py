"""Start-up time of the `tiler` command: wall seconds per command, median of runs.

Each row runs the installed `tiler` entry point in a fresh process, as a user
would. Targets (issue 9): `tiler --help`, a mistyped option and `tiler run` on
a missing file answer in <= 0.5 s; `tiler register` and `tiler indices` (which
need no network, so never import Keras or TensorFlow) finish on a small scene
in <= 1 s, start-up included (a 256^2 scene: the work itself is a few ms).
`tiler run` on the bundled sample scene is shown for comparison (3.7 Mpx
predicted). Issue 23's target: with the network already converted (OpenVINO's
cache), the whole `tiler run` process takes at most 1.5 s more than its
`run_scene` (the report's ``seconds.total``), and imports no Keras or
TensorFlow; the last table prints both, from a fresh cache folder warmed by
one run.

    python benchmarks/startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import rasterio
from _timing import stamp  # benchmarks/_timing.py
from affine import Affine

TARGETS = {"help": 0.5, "typo": 0.5, "missing": 0.5, "register": 1.0, "indices": 1.0, "info": 1.0}


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.linspace(0, 12, height)[:, None]
    c = np.linspace(0, 12, width)[None, :]
    base = np.sin(r * 1.7) * np.cos(c * 1.3) + 0.5 * np.sin(r * 4.1 + c * 2.9)
    return base + 0.2 * rng.standard_normal((height, width))


def _write(path: str, data: np.ndarray, pixel: float) -> None:
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": "uint16", "crs": "EPSG:32618", "transform": Affine(pixel, 0, 435720, 0, -pixel, 4200000),
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def make_scene(folder: str, size: int = 256) -> str:
    """A size^2 10 m group (blue, green, red, nir) and a (size/2)^2 20 m group (swir1), as a manifest.

    Small on purpose: the rows time start-up (imports, numba's cache, opening
    the files), not work.
    """
    fine = _texture(size, size, 0)
    bands10 = np.stack([1000 + 300 * fine + 50 * k for k in range(4)]).astype(np.uint16)
    half = size // 2
    coarse = fine.reshape(half, 2, half, 2).mean(axis=(1, 3))
    _write(os.path.join(folder, "b10.tif"), bands10, 10.0)
    _write(os.path.join(folder, "b20.tif"), (1500 + 300 * coarse)[None].astype(np.uint16), 20.0)
    # (blocks of 256 need a file at least that large: GDAL pads smaller tiled files)
    manifest = os.path.join(folder, "scene.toml")
    with open(manifest, "w") as f:
        f.write('[groups.10m]\nfiles = ["b10.tif"]\nbands = ["blue", "green", "red", "nir"]\nscale = 0.0001\n\n'
                '[groups.20m]\nfiles = ["b20.tif"]\nbands = ["swir1"]\nscale = 0.0001\n')
    return manifest


def time_command(args: list[str], repeat: int, cwd: str) -> tuple[float, int, str]:
    times, rc, first = [], 0, ""
    for i in range(repeat):
        for f in os.listdir(cwd):
            if f.startswith("out"):
                os.unlink(os.path.join(cwd, f))
        t = time.perf_counter()
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        rc = proc.returncode
        first = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[0] if (proc.stderr or proc.stdout) else ""
    return statistics.median(times), rc, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(stamp(), flush=True)
    exe = shutil.which("tiler") or sys.exit("the `tiler` command is not on PATH: pip install the project first")
    with tempfile.TemporaryDirectory() as d:
        scene = make_scene(d)
        sample = os.path.join(os.path.dirname(__file__), "..", "examples", "dubai_sample.tif")
        rows = [
            ("help", [exe, "--help"]),
            ("typo", [exe, "run", "--overlapp", "0.5"]),
            ("missing", [exe, "run", "missing.tif", "-o", "out.tif"]),
            ("info", [exe, "info", scene]),
            ("indices", [exe, "indices", scene, "--index", "ndvi", "--index", "ndmi", "-o", "out.tif",
                         "--registration", "off", "-q"]),
            ("register", [exe, "register", scene, "--grid", "4", "--window", "24"]),
            ("run (sample, 3.7 Mpx)", [exe, "run", os.path.abspath(sample), "-o", "out.tif", "-q"]),
        ]
        print(f"`tiler` start-up, wall seconds, median of {args.repeat} fresh processes; cpus={os.cpu_count()}")
        print(f"{'command':<22} {'seconds':>8} {'target':>7} {'exit':>5}  first line of output")
        print("-" * 100)
        for name, cmd in rows:
            repeat = 1 if name.startswith("run (") else args.repeat
            sec, rc, first = time_command(cmd, repeat, d)
            target = TARGETS.get(name)
            mark = "-" if target is None else f"{target:.1f}" + (" ok" if sec <= target else " !!")
            print(f"{name:<22} {sec:8.2f} {mark:>7} {rc:>5}  {first[:60]}")
        cached_run(os.path.abspath(sample), args.repeat, d)


_PROBE = """
import sys, time
from tiler.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(",".join(m for m in ("keras", "tensorflow", "distributed") if m in sys.modules) or "none")
"""


def cached_run(sample: str, repeat: int, folder: str) -> None:
    """Whole-process wall time of `tiler run` on the sample against its run_scene time, network cached."""
    import json

    env = {**os.environ, "TILER_CACHE_DIR": os.path.join(folder, "cache")}
    report = os.path.join(folder, "out.json")
    cmd = [sys.executable, "-c", _PROBE, "run", sample, "-o", os.path.join(folder, "out.tif"), "--overwrite",
           "--report", report, "-q"]
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # converts and caches the network
    rows = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        with open(report) as f:
            rows.append((wall, json.load(f)["seconds"]["total"], proc.stdout.strip().splitlines()[-1]))
    wall, scene = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
    print()
    print(f"`tiler run` of the sample (3.7 Mpx), network converted and cached; median of {repeat} fresh processes")
    print(f"{'whole process s':>16} {'run_scene s':>12} {'difference s':>13} {'target':>8}  modules imported")
    print(f"{wall:16.2f} {scene:12.2f} {wall - scene:13.2f} {'<= 1.5':>8}  {rows[-1][2]}")


if __name__ == "__main__":
    main()
