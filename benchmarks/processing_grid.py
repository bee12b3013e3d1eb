"""A model at its own pixel size: DLR's 30 m cloud models on the shared 10 m Sentinel-2 scene.

Issue 37's benchmark: ``tiler run`` on the Sentinel-2 L1C folder with a cloud model trained at 30 m, on the
scene's 10 m grid as before (``--resample off``) against the processing grid at 30 m (the default), one run
of each interleaved, ``--rounds`` times, in one process per run (the command a user types): whole-process
seconds (median), scene Mpx/s, the processing grid, and the class shares of each output; the last column is
the share of pixels on which the two outputs agree.

Usage::

    python benchmarks/processing_grid.py [--models clouds-s2-l1c-4b clouds-s2-l1c-6b] [--rounds 3]

Needs ``../shared/data/sentinel2_18SVG_20160112`` and ``ukis-csmask`` (``pip install '.[clouds]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import stamp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT.parent / "shared" / "data" / "sentinel2_18SVG_20160112"
TILER = str(Path(sys.executable).with_name("tiler"))


def _run(model: str, resample: str, out: Path) -> tuple[float, dict]:
    report = out.with_suffix(".json")
    t = time.perf_counter()
    subprocess.run([TILER, "run", str(SCENE), "--model", model, "--resample", resample, "-o", str(out),
                    "--report", str(report), "--overwrite", "-q"], check=True)
    return time.perf_counter() - t, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["clouds-s2-l1c-4b", "clouds-s2-l1c-6b"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(stamp())
    print(f"# {SCENE.name}: {args.rounds} interleaved rounds, median whole-process seconds")
    print("| model | grid | processing px | seconds | scene Mpx/s | clear | cloud | cloud shadow | nodata "
          "| same class as 10 m |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            times: dict[str, list[float]] = {"off": [], "auto": []}
            reports: dict[str, dict] = {}
            for _ in range(args.rounds):
                for mode in ("off", "auto"):
                    seconds, reports[mode] = _run(model, mode, Path(tmp) / f"{mode}.tif")
                    times[mode].append(seconds)
            maps = {}
            for mode in ("off", "auto"):
                with rasterio.open(Path(tmp) / f"{mode}.tif") as ds:
                    maps[mode] = ds.read(1)
            for mode in ("off", "auto"):
                cm, pg, sc = maps[mode], reports[mode]["processing_grid"], reports[mode]["scene"]
                seconds = statistics.median(times[mode])
                shares = [f"{(cm == k).mean():.2%}" for k in (0, 1, 2, 255)]
                same = (maps["off"] == cm).mean()
                grid = f"{pg['pixel_size']:g} m" + (" (scene's)" if mode == "off" else "")
                print(f"| {model} | {grid} | {pg['width']} x {pg['height']} | {seconds:.2f} | "
                      f"{sc['width'] * sc['height'] / 1e6 / seconds:.2f} | {' | '.join(shares)} | {same:.2%} |")


if __name__ == "__main__":
    main()
