"""Every output format of ``tiler run`` from an install without extras (run by ``.ci/clean-install``).

Usage: ``python .ci/clean_install_check.py WORK_FOLDER`` with the Python of a virtual environment that
holds ``pip install .`` and nothing else. Writes a georeferenced copy (EPSG:32640, 0.5 m) and a plain copy
of a 512 x 512 excerpt of the bundled sample scene, runs ``tiler run`` with every product on each, checks
that every file opens and is complete, and that each optional feature names the extra that brings it.
Exits non-zero with the failing command's output on the first problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pyogrio
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TILER = os.path.join(os.path.dirname(sys.executable), "tiler")


def tiler(*args: str, expect: int = 0, says: str = "") -> str:
    """Run ``tiler ARGS`` in the work folder; fail unless it exits ``expect`` and its stderr holds ``says``."""
    proc = subprocess.run([TILER, *args], capture_output=True, text=True, cwd=WORK)
    text = proc.stdout + proc.stderr
    if proc.returncode != expect or says not in text:
        sys.exit(f"clean install: `tiler {' '.join(args)}` exited {proc.returncode} (expected {expect}"
                 f"{', saying ' + repr(says) if says else ''}):\n{text}")
    print(f"ok  tiler {' '.join(args)}  -> exit {proc.returncode}", flush=True)
    return text


def scenes() -> dict[str, str]:
    """The georeferenced and plain 512 x 512 excerpts of the sample scene."""
    with rasterio.open(os.path.join(ROOT, "examples", "dubai_sample.tif")) as src:
        data = src.read(window=Window(600, 600, 512, 512))
    made = {}
    for name, geo in (("geo", True), ("plain", False)):
        path = os.path.join(WORK, f"{name}.tif")
        profile = {"driver": "GTiff", "width": 512, "height": 512, "count": data.shape[0], "dtype": data.dtype}
        if geo:
            profile.update(crs="EPSG:32640", transform=from_origin(300000.0, 2800000.0, 0.5, 0.5))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        made[name] = path
    return made


def check_outputs(name: str, scene: str) -> None:
    """Every product of one scene, each checked to open and to be complete."""
    out = os.path.join(WORK, name)
    os.makedirs(out)
    tiler("run", scene, "-o", f"{out}/m.tif", "--vector", f"{out}/m.gpkg", "--html", f"{out}/m.html",
          "--report", f"{out}/r.json", "-q")
    tiler("run", scene, "-o", f"{out}/c.tif", "--cog", "--vector", f"{out}/m.fgb", "-q")
    tiler("run", scene, "-o", f"{out}/p.tif", "--output", "probability", "--vector", f"{out}/m.csv", "-q")
    if name == "geo":
        tiler("run", scene, "--vector", f"{out}/m.geojson", "-q")
    else:  # GeoJSON is longitude/latitude: a scene in pixel coordinates is refused with the reason
        tiler("run", scene, "--vector", f"{out}/m.geojson", "-q", expect=2, says="GeoJSON")
    for tif, bands in (("m.tif", 1), ("c.tif", 1), ("p.tif", 5)):
        with rasterio.open(f"{out}/{tif}") as ds:
            assert (ds.width, ds.height, ds.count) == (512, 512, bands), (tif, ds.profile)
            assert (ds.crs is not None) == (name == "geo"), (tif, ds.crs)
            ds.read()
    with rasterio.open(f"{out}/c.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", "not a Cloud-Optimized GeoTIFF"
    counts = {}
    for vec in ("m.gpkg", "m.fgb") + (("m.geojson",) if name == "geo" else ()):
        info = pyogrio.read_info(f"{out}/{vec}")
        counts[vec] = info["features"]
        assert info["features"] > 0, (vec, info)
    assert len(set(counts.values())) == 1, counts
    with open(f"{out}/m.csv", encoding="utf-8") as f:
        assert f.readline().strip() and sum(1 for _ in f) > 0
    with open(f"{out}/r.json", encoding="utf-8") as f:
        assert json.load(f)["out"].endswith("m.tif")
    with open(f"{out}/m.html", encoding="utf-8") as f:
        assert "<html" in f.read(2000)
    leftovers = [f for f in os.listdir(out) if f.startswith(".")]
    assert not leftovers, leftovers


def check_extras(scene: str) -> None:
    """Optional features: each works, or says which extra to install (exit 2)."""
    extras = {"onnxruntime": False, "pyarrow": False, "ukis_csmask": False, "tf2onnx": False}
    for module in extras:
        try:
            __import__(module)
            extras[module] = True
        except ImportError:
            pass
    if not extras["onnxruntime"]:  # what `tiler run --model m.onnx --runtime onnxruntime` checks first
        from tiler.errors import PlanError
        from tiler.model._runtime import check_runtime

        try:
            check_runtime("onnxruntime", "float32", onnx=True)
            sys.exit("clean install: --runtime onnxruntime accepted without onnxruntime installed")
        except PlanError as exc:
            assert "[onnxruntime]" in str(exc), exc
        print("ok  --runtime onnxruntime names its extra", flush=True)
    parquet = subprocess.run([TILER, "run", scene, "--vector", "m.parquet", "-q"], capture_output=True, text=True,
                             cwd=WORK)
    if parquet.returncode != 0 and "[parquet]" not in parquet.stderr:
        sys.exit(f"clean install: GeoParquet failed without naming the extra:\n{parquet.stderr}")
    print(f"ok  tiler run --vector m.parquet  -> exit {parquet.returncode}", flush=True)
    if not extras["tf2onnx"]:
        tiler("export", "default", "-o", "m.onnx", expect=2, says="[export]")
    if not extras["ukis_csmask"]:
        tiler("models", says="[clouds]")


if __name__ == "__main__":
    warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # the plain scene, on purpose
    WORK = os.path.abspath(sys.argv[1])
    os.makedirs(WORK)
    made = scenes()
    for scene_name, path in made.items():
        check_outputs(scene_name, path)
    check_extras(made["geo"])
    print("clean install: every output format written, every optional feature names its extra")
