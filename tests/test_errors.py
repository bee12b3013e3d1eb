"""The failure path (issue 33): a run's outputs are one transaction, every failure names its stage and
says what is on disk, and the inputs that gave wrong answers with exit 0 are refused.

Oracles: the bytes of the files on disk before and after, the exit code and the message's words; the
dependencies are checked against the imports found by parsing the package (ast), not by importing it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.conftest import DUBAI, SENTINEL2, needs_shared, smooth_image, write_tif
from tiler.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones included) -> its sha256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif", smooth_image(3, 96, 112))


# ------------------------------------------------------------------ 1. a clean install declares what it imports

def _requirement_names(specs) -> set[str]:
    """Distribution names of requirement strings; an extra of a requirement counts as the distribution it brings
    (``dask[distributed]`` declares ``distributed``)."""
    from packaging.requirements import Requirement

    names = set()
    for spec in specs:
        req = Requirement(spec)
        names |= {n.lower().replace("_", "-") for n in (req.name, *req.extras)}
    return names


def test_every_module_the_package_imports_is_declared():
    """pyproj was imported (GeoJSON, geodesic areas, tiler view) but declared nowhere: `pip install .` broke."""
    import importlib.metadata as md

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared |= _requirement_names(extra)
    modules = set()
    for path in (ROOT / "tiler").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = {m for m in modules - set(sys.stdlib_module_names) - {"tiler", "__future__"}}
    distributions = md.packages_distributions()
    # Imported only where installed, each optional by design: CUDA clusters, TensorFlow itself (declared as
    # tensorflow-cpu on x86-64), tomli (Python 3.10's tomllib).
    optional = {"dask_cuda", "tensorflow", "tomli"}
    missing = {}
    for module in sorted(third_party - optional):
        # A module not installed here (an extra's) counts by its own name: torch is the torch extra's.
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])} or {module.replace("_", "-")}
        if not names & declared:
            missing[module] = sorted(names) or ["(not installed)"]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


# ------------------------------------------------------------------ 2. the outputs of a run are one transaction

def test_a_failing_polygon_stage_leaves_the_earlier_outputs_as_they_were(tmp_path, scene, tiny_model, monkeypatch):
    """Today's defect: the mask was renamed into place before the polygons failed, and with --overwrite an
    earlier run's mask was replaced while its polygons stayed."""
    import tiler
    from tiler.sinks import PolygonSink

    out = tmp_path / "out"
    out.mkdir()
    tiler.run_scene(scene, out / "m.tif", vector=out / "m.gpkg", model=tiny_model, overlap=0.0)
    before = _digest(out)

    def broken(self):
        raise OSError("the polygon stage broke")

    monkeypatch.setattr(PolygonSink, "commit", broken)
    with pytest.raises(OSError, match="polygon stage broke"):
        tiler.run_scene(scene, out / "m.tif", vector=out / "m.gpkg", model=tiny_model, overlap=0.25,
                        overwrite=True)
    assert _digest(out) == before  # the earlier pair, byte for byte, and no temporary file
    with pytest.raises(OSError):
        tiler.run_scene(scene, tmp_path / "new.tif", vector=tmp_path / "new.gpkg", model=tiny_model)
    assert not (tmp_path / "new.tif").exists()


def test_a_failing_page_names_its_stage_and_leaves_nothing(runner, tmp_path, scene, tiny_model, monkeypatch):
    import tiler.view

    def broken(*args, **kwargs):
        raise RuntimeError("no page today")

    monkeypatch.setattr(tiler.view, "build_page", broken)
    out = tmp_path / "out"
    out.mkdir()
    r = runner.invoke(main, ["run", scene, "-o", str(out / "m.tif"), "--vector", str(out / "m.gpkg"), "--html",
                             str(out / "m.html"), "--report", str(out / "r.json"), "--model", tiny_model])
    assert r.exit_code == 1, r.output
    assert f"writing the page {out / 'm.html'} failed: RuntimeError: no page today" in r.output
    assert _digest(out) == {}


def test_an_interruption_in_the_last_stages_says_nothing_was_written_and_is_true(runner, tmp_path, scene,
                                                                                   tiny_model, monkeypatch):
    """Ctrl-C while the page is built: before, the mask, polygons and report stayed behind a line that said
    no output was left behind."""
    import tiler.view

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tiler.view, "build_page", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.tif").write_bytes(b"an earlier mask")
    r = runner.invoke(main, ["run", scene, "-o", str(out / "m.tif"), "--vector", str(out / "m.gpkg"), "--html",
                             str(out / "m.html"), "--report", str(out / "r.json"), "--model", tiny_model,
                             "--overwrite"])
    assert r.exit_code == 130, r.output
    assert r.output.strip().splitlines()[-1] == ("Interrupted; no output was written; files already at the "
                                                  "output paths are as they were.")
    assert sorted(os.listdir(out)) == ["m.tif"] and (out / "m.tif").read_bytes() == b"an earlier mask"


def test_the_last_line_lists_what_was_committed_and_kept():
    """A signal after some outputs were committed (a batch's finished masks): the line names them and the resume."""
    from tiler import _signals
    from tiler.cli._common import _left_behind

    previous = _signals.install()
    try:
        _signals.written("/out/a.tif")
        _signals.keep("run the same command again to finish the batch")
        assert _left_behind() == ("complete before the signal and kept: /out/a.tif; run the same command again to "
                                  "finish the batch.")
    finally:
        _signals.restore(previous)


def test_a_crash_inside_the_commit_step_is_finished_by_the_next_command(tmp_path):
    """The intent file of a process killed between two renames: the next guard of that folder finishes them."""
    from tiler.destination import guard_outputs

    dead = subprocess.Popen(["true"])
    dead.wait()
    staged = {}
    for name, text in (("m.tif", "mask"), ("m.gpkg", "polygons")):
        tmp = tmp_path / f".{name}.tiler-{dead.pid}-0123abcd.part{Path(name).suffix}"
        tmp.write_text(text)
        staged[name] = tmp
    (tmp_path / "m.tif").write_text("mask")  # the first rename was done, the second not
    staged["m.tif"].unlink()
    (tmp_path / f".tiler-commit-{dead.pid}.json").write_text(json.dumps(
        {"pid": dead.pid, "renames": [[str(staged["m.tif"]), str(tmp_path / "m.tif")],
                                      [str(staged["m.gpkg"]), str(tmp_path / "m.gpkg")]]}))
    with guard_outputs({"--report": tmp_path / "r.json"}):
        pass
    assert sorted(os.listdir(tmp_path)) == ["m.gpkg", "m.tif"]
    assert (tmp_path / "m.gpkg").read_text() == "polygons"


def test_outputs_are_committed_together_and_a_late_clash_commits_none(tmp_path):
    from tiler.destination import guard_outputs
    from tiler.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="none of tiler's outputs was written"):
        with guard_outputs({"a": tmp_path / "a.json", "b": tmp_path / "b.json"}) as guard:
            guard["a"].write_text("a")
            guard["b"].write_text("b")
            assert not (tmp_path / "a.json").exists()  # staged, not renamed
            (tmp_path / "b.json").write_text("someone else's")
    assert sorted(os.listdir(tmp_path)) == ["b.json"]
    assert (tmp_path / "b.json").read_text() == "someone else's"


def _training_data(tmp_path) -> list[str]:
    """Two labelled synthetic images each for training and validation, and a class file: ``tiler train``'s
    data arguments."""
    from tests.conftest import labelled_folders

    labelled_folders(tmp_path, 3, lambda img: (img[0] > 128).astype(np.uint8))
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [{"name": "a", "colour": "#000000"},
                                                                   {"name": "b", "colour": "#FFFFFF"}]}))
    return [str(tmp_path / "train/img"), str(tmp_path / "train/mask"), "--classes", str(tmp_path / "classes.json"),
            "--val-images", str(tmp_path / "val/img"), "--val-masks", str(tmp_path / "val/mask")]


# ------------------------------------------------------------------ 4. a refused train leaves no lock

def test_a_refused_training_leaves_no_lock(runner, tmp_path):
    r = runner.invoke(main, ["train", *_training_data(tmp_path), "-o", str(tmp_path / "m.keras"),
                             "--patch-size", "30"])
    assert r.exit_code == 2, r.output
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".lock") or f.startswith(".m.keras")]


def test_sigterm_in_training_keeps_the_checkpoint_and_says_how_to_resume(tmp_path):
    """Before: the model file and a 0-byte .last-PID.keras were left, and the line said nothing was."""
    import signal
    import time

    folder = tmp_path / ".m.keras.tiler-train"
    proc = subprocess.Popen([sys.executable, "-m", "tiler.cli", "train", *_training_data(tmp_path),
                             "-o", str(tmp_path / "m.keras"), "--epochs", "500", "--steps-per-epoch", "2",
                             "--batch-size", "2", "--patch-size", "16", "--depth", "2", "--base-filters", "4",
                             "-q"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (folder / "state.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Terminated (SIGTERM); no output was written; the checkpoint of the last finished epoch "
                           f"is kept in {folder}: run the same command with --resume"), err
    assert not (tmp_path / "m.keras").exists()
    assert sorted(os.listdir(folder)) == ["best.keras", "last.keras", "state.json"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".m.keras.tiler-") and f != folder.name]


# ------------------------------------------------------------------ 5.-7. wrong answers with exit 0

def test_bounds_impossible_in_the_declared_crs_are_refused(runner, tmp_path, tiny_model):
    """EPSG:4326 on UTM coordinates gave 0 polygons and exit 0 (the geodesic areas were NaN)."""
    scene = write_tif(tmp_path / "s.tif", smooth_image(3, 64, 64), crs="EPSG:4326",
                      transform=Affine(0.5, 0, 300000.0, 0, -0.5, 2800000.0))
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "m.tif"), "--vector", str(tmp_path / "m.gpkg"),
                             "--model", tiny_model])
    assert r.exit_code == 2, r.output
    assert "EPSG:4326" in r.output and "300000" in r.output and "rio edit-info --crs" in r.output
    assert sorted(os.listdir(tmp_path)) == ["s.tif"]


def test_a_nan_area_never_filters_a_polygon(tmp_path):
    """Polygons whose geodesic area is NaN (coordinates the CRS cannot hold) are written, not dropped."""
    import pyogrio
    from rasterio.crs import CRS

    from tiler.config import VectorConfig
    from tiler.destination import guard_outputs
    from tiler.engine import Block
    from tiler.labels import LabelScheme
    from tiler.sinks import OutputContext, PolygonSink, feed

    context = OutputContext(8, 8, CRS.from_epsg(4326), Affine(0.5, 0, 300000.0, 0, -0.5, 2800000.0),
                            ("a", "b", "c"), labels=LabelScheme(("a", "b", "c"), ("#000000", "#FF0000", "#FFFFFF")))
    class_map = np.zeros((8, 8), np.uint8)
    class_map[2:5, 2:5] = 1
    with guard_outputs({"--vector": tmp_path / "v.gpkg"}) as guard:
        feed([Block((0, 8), (0, 8), np.ones((8, 8), bool), class_map=class_map)],
             [PolygonSink(guard["--vector"], VectorConfig(classes="a,b,c"))], context)
    assert pyogrio.read_info(str(tmp_path / "v.gpkg"))["features"] == 2


def _deepness_graph(path, classes=2):
    from onnx import TensorProto, helper

    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((classes, 3, 1, 1)).astype(np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", classes, "height", "width"])
    nodes = [helper.make_node("Conv", ["input", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["out"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "seg", [x], [y], [helper.make_tensor(
        "w", TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)]), opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"model_type": '"Segmentor"', "class_names": json.dumps({"0": "background", "1": "building"}),
                       "tiles_size": "64", "tiles_overlap": "12.5"}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return str(path)


def test_a_deepness_model_refuses_a_16_bit_scene(runner, tmp_path):
    """Deepness's models take 8-bit RGB scaled by 1/255: a uint16 scene came out 99.7 % one class, exit 0."""
    model = _deepness_graph(tmp_path / "d.onnx")
    scene = write_tif(tmp_path / "s.tif", (smooth_image(3, 64, 64).astype(np.uint16) * 40))
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "m.tif"), "--model", model])
    assert r.exit_code == 2, r.output
    assert "training domain" in r.output and "uint8" in r.output and "--input-scale" in r.output
    assert not (tmp_path / "m.tif").exists()
    ok = write_tif(tmp_path / "ok.tif", smooth_image(3, 64, 64))
    r = runner.invoke(main, ["run", ok, "-o", str(tmp_path / "m.tif"), "--model", model])
    assert r.exit_code == 0, r.output


def test_deepness_overlap_round_trips_exactly(tmp_path):
    from tiler.model import read_info
    from tiler.model._export import _overlap_percent

    assert _overlap_percent(192, 0.125) == 12.5 and _overlap_percent(256, 0.25) == 25
    assert read_info(_deepness_graph(tmp_path / "d.onnx")).recommended()[1] == 0.125  # 12.5 % of 64 px: 8 px


def _masks(tmp_path, crs, transform, vector_crs, offset=0.0):
    """A class map and a GeoPackage of one square polygon in ``vector_crs`` moved by ``offset``."""
    import pyogrio
    import shapely

    mask = write_tif(tmp_path / "mask.tif", np.ones((1, 64, 64), np.uint8), crs=crs, transform=transform)
    t = transform or Affine.identity()
    x0, y0 = t.c + offset, t.f + offset
    square = shapely.box(x0 + 10 * t.a, y0 + 10 * t.e, x0 + 20 * t.a, y0 + 20 * t.e) if crs else shapely.box(
        10, 10, 20, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio's "'crs' was not provided": on purpose here
        pyogrio.raw.write(str(tmp_path / "p.gpkg"), np.array([shapely.to_wkb(square)], dtype=object),
                          [np.array([100.0])], ["area"], driver="GPKG", crs=vector_crs, geometry_type="Polygon")
    return mask, str(tmp_path / "p.gpkg")


@pytest.mark.parametrize("case", ["pixels over a georeferenced mask", "another place"])
def test_view_refuses_polygons_that_are_not_of_the_mask(runner, tmp_path, case):
    transform = Affine(10.0, 0, 435730.0, 0, -10.0, 4200000.0)
    if case == "pixels over a georeferenced mask":
        mask, vector = _masks(tmp_path, "EPSG:32618", transform, None)
        said = "has no CRS"
    else:
        mask, vector = _masks(tmp_path, "EPSG:32618", transform, "EPSG:32618", offset=1e6)
        said = "does not meet the mask's extent"
    r = runner.invoke(main, ["view", mask, "--vector", vector, "-o", str(tmp_path / "page.html")])
    assert r.exit_code == 2 and said in r.output, r.output
    assert not (tmp_path / "page.html").exists()
    mask, vector = _masks(tmp_path, "EPSG:32618", transform, "EPSG:32618")
    r = runner.invoke(main, ["view", mask, "--vector", vector, "-o", str(tmp_path / "page.html"), "--overwrite"])
    assert r.exit_code == 0, r.output


def test_view_keeps_the_largest_polygons_reading_only_those(tmp_path, monkeypatch):
    """5.47 M polygons took 7.3 GB: only the area column and the kept features are read now."""
    import pyogrio
    import shapely

    import tiler.view as view

    n = 50
    boxes = [shapely.box(i, 0, i + 1, 1 + i % 7) for i in range(n)]
    areas = np.array([shapely.area(b) for b in boxes])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pyogrio's "'crs' was not provided": pixel coordinates
        pyogrio.raw.write(str(tmp_path / "p.gpkg"), np.array([shapely.to_wkb(b) for b in boxes], dtype=object),
                          [areas], ["area"], driver="GPKG", crs=None, geometry_type="Polygon")
    write_tif(tmp_path / "m.tif", np.zeros((1, 10, 60), np.uint8), crs=None)
    monkeypatch.setattr(view, "MAX_POLYGONS", 10)
    read = []
    original = pyogrio.raw.read

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        read.append(len(result[2]) if result[2] is not None else 0)
        return result

    monkeypatch.setattr(pyogrio.raw, "read", spy)
    with rasterio.open(tmp_path / "m.tif") as ds:
        polygons, dropped = view._polygons(str(tmp_path / "p.gpkg"), ds, 1.0)
    assert dropped == n - 10 and len(polygons["features"]) == 10
    assert max(read) == 10  # geometries read: the kept ones only
    kept = sorted((f["properties"]["area"] for f in polygons["features"]), reverse=True)
    assert kept == sorted(areas, reverse=True)[:10]


# ------------------------------------------------------------------ 8.-9. the reason, named

def test_a_missing_module_in_the_polygon_stage_names_that_stage(runner, tmp_path, scene, tiny_model, monkeypatch):
    from tiler.sinks import PolygonSink

    def missing(self, block):
        raise ModuleNotFoundError("No module named 'pyproj'")

    monkeypatch.setattr(PolygonSink, "write", missing)
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "m.tif"), "--vector", str(tmp_path / "m.gpkg"),
                             "--model", tiny_model])
    assert r.exit_code == 1
    assert "opening the scene" not in r.output
    assert f"writing the polygons {tmp_path / 'm.gpkg'} failed: ModuleNotFoundError: No module named 'pyproj'" \
        in r.output, r.output
    assert not (tmp_path / "m.tif").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MB tmpfs (root only; skipped where it cannot be mounted)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def _fill(folder: Path, leave: int = 8 * 1024) -> None:
    """Leave only ``leave`` bytes free in ``folder`` (a ballast file on another mount's path would not do)."""
    import shutil

    with open(folder / ".ballast", "wb") as f:  # hidden: tiler's outputs are counted apart from it
        f.write(b"\0" * max(0, shutil.disk_usage(folder).free - leave))


def _tiler(*args, fsize=None):
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "tiler.cli", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limit if fsize else None, timeout=300)


@pytest.mark.parametrize("product, fill", [(("-o", "m.tif", "--output", "probability"), False),
                                           (("-o", "m.tif"), True), (("--vector", "m.gpkg"), False)])
def test_a_full_disk_is_named_for_every_output_kind(tmp_path, small_tmpfs, tiny_model, product, fill):
    """On an empty 2 MB tmpfs the probabilities failed as "RasterioIOError: Read failed" and the polygons as
    "FeatureError ... disk I/O error" (the disk is no longer full once the failed write is rolled back); the
    small class map is given a nearly full disk."""
    scene = write_tif(tmp_path / "big.tif", smooth_image(3, 1024, 1024, seed=3))
    flag, name, *rest = product
    if fill:
        _fill(small_tmpfs)
    r = _tiler("run", scene, flag, small_tmpfs / name, *rest, "--model", tiny_model, "--overlap", "0", "-q")
    assert r.returncode == 1, r.stderr
    assert f"no space left on device writing {small_tmpfs / name}" in r.stderr, r.stderr
    assert os.listdir(small_tmpfs) == ([".ballast"] if fill else [])


@pytest.mark.parametrize("product", [("-o", "m.tif", "--output", "probability"), ("--vector", "m.gpkg")])
def test_a_file_size_limit_is_named(tmp_path, tiny_model, product):
    scene = write_tif(tmp_path / "big.tif", smooth_image(3, 1024, 1024, seed=3))
    out = tmp_path / "out"
    out.mkdir()
    flag, name, *rest = product
    r = _tiler("run", scene, flag, out / name, *rest, "--model", tiny_model, "--overlap", "0", "-q", fsize=300_000)
    assert r.returncode == 1, r.stderr
    assert f"file size limit reached writing {out / name}" in r.stderr and "ulimit -f" in r.stderr, r.stderr
    assert os.listdir(out) == []


# ------------------------------------------------------------------ 10. co-registered products without windows

@needs_shared(SENTINEL2)
def test_a_featureless_sentinel2_group_keeps_its_georeferenced_place(runner, tmp_path):
    """Snow, cloud or water: registration finds no usable window; the producer co-registered the bands."""
    from tests.scenes import s2_patch

    folder = s2_patch(tmp_path / "S2")
    for band in ("B05", "B8A", "B11"):  # the 20 m group, saturated like fresh snow
        path = folder / f"s2_{band}.tif"
        with rasterio.open(path, "r+") as ds:
            ds.write(np.full((1, ds.height, ds.width), 9000, ds.dtypes[0]))
    r = runner.invoke(main, ["indices", str(folder), "-o", str(tmp_path / "ndmi.tif"), "--index", "ndmi",
                             "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "stay where the sentinel2 product's georeferencing puts them" in r.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert "registration failed" in report["registration"]["fallback"]
    r = runner.invoke(main, ["indices", str(folder), "-o", str(tmp_path / "strict.tif"), "--index", "ndmi",
                             "--registration", "strict"])
    assert r.exit_code == 2 and "registration failed" in r.output, r.output
    assert not (tmp_path / "strict.tif").exists()


# ------------------------------------------------------------------ 11. ONNX errors that say what is wrong

def _graph(path, *, classes=5, dims=("batch", 3, "height", "width"), sidecar=None):
    from onnx import TensorProto, helper

    onnx = pytest.importorskip("onnx")
    w = np.ones((classes, 3, 1, 1), np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [dims[0], classes, dims[2], dims[3]])
    model = helper.make_model(helper.make_graph([helper.make_node("Conv", ["input", "w"], ["out"])], "seg", [x], [y],
                                                [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.tobytes(),
                                                                    raw=True)]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    if sidecar is not None:
        Path(str(path) + ".json").write_text(json.dumps(sidecar))
    return str(path)


def _sidecar(classes=5, layout="NCHW", patch=64):
    return {"channels": ["red", "green", "blue"], "classes": [f"c{k}" for k in range(classes)],
            "offset": [0.0] * 3, "scale": [255.0] * 3, "patch_size": patch, "depth": 0,
            "network": {"format": "onnx", "layout": layout, "output": "logits"}}


def test_onnx_errors_say_what_is_wrong(tmp_path):
    from tiler.errors import ModelFileError, PlanError
    from tiler.model import read_info
    from tiler.pipeline import resolve_run

    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="is empty"):
        read_info(tmp_path / "empty.onnx")
    with pytest.raises(ModelFileError, match="output has 5 classes .* metadata names 2"):
        read_info(_graph(tmp_path / "two.onnx", sidecar=_sidecar(classes=2)))
    with pytest.raises(ModelFileError, match="NCHW with 3 channels, but the metadata says layout NHWC"):
        read_info(_graph(tmp_path / "nhwc.onnx", sidecar=_sidecar(layout="NHWC")))
    fixed = _graph(tmp_path / "fixed.onnx", dims=(1, 3, 64, 64), sidecar=_sidecar())
    with pytest.raises(PlanError, match="exactly 64 x 64 px"):
        resolve_run(model=fixed, patch_size=96)
    assert resolve_run(model=fixed).patch_size == 64


# ------------------------------------------------------------------ 12.-14.

@needs_shared(DUBAI)
def test_evaluate_ignores_the_colours_the_class_file_declares(runner, tmp_path):
    """examples/dubai_classes.json declares #9B9B9B ignored: a mask with 2.7 % of them was refused."""
    from tiler.labels import IGNORE, read_mask

    truth = tmp_path / "truth"
    pred = tmp_path / "pred"
    truth.mkdir()
    pred.mkdir()
    source = DUBAI / "tile_1" / "masks" / "image_part_004.png"
    (truth / "a.png").write_bytes(source.read_bytes())
    from tiler.labels import LabelScheme

    scheme = LabelScheme.from_file(ROOT / "examples" / "dubai_classes.json")
    labels = scheme.decode(read_mask(str(source)), fix="")
    predicted = np.where(labels == IGNORE, 1, labels).astype(np.uint8)  # the truth itself, ignored pixels as land
    write_tif(pred / "a.tif", predicted[None], crs=None)
    assert (labels == IGNORE).mean() > 0.01  # more than the 1 % that needs --allow-ignored for undeclared values
    r = runner.invoke(main, ["evaluate", str(pred), str(truth), "--classes",
                             str(ROOT / "examples" / "dubai_classes.json"), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mean_iou"] == pytest.approx(1.0)
    assert scores["excluded"]["truth_ignored_declared"] is True


def test_batch_into_its_own_input_folder_says_so_at_once(runner, tmp_path, tiny_model):
    write_tif(tmp_path / "a.tif", smooth_image(3, 40, 40))
    r = runner.invoke(main, ["batch", str(tmp_path / "*.tif"), "--out-dir", str(tmp_path), "--model", tiny_model])
    assert r.exit_code == 2 and "would overwrite input" in r.output and "--overwrite" not in r.output, r.output
    r = runner.invoke(main, ["batch", str(tmp_path / "*.tif"), "--out-dir", str(tmp_path), "--model", tiny_model,
                             "--overwrite"])
    assert r.exit_code == 2 and "would overwrite input" in r.output, r.output


def test_model_names_work_wherever_a_model_is_read(runner, tmp_path):
    from tiler.model._file import DEFAULT_MODEL_PATH
    from tiler.model._registry import resolve_model_path

    assert os.path.samefile(resolve_model_path("default", option="--init"), DEFAULT_MODEL_PATH)
    r = runner.invoke(main, ["export", "no-such-model", "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2 and "MODEL 'no-such-model'" in r.output and "default" in r.output, r.output
    r = runner.invoke(main, ["train", *_training_data(tmp_path), "-o", str(tmp_path / "m.keras"),
                             "--init", "no-such-model"])
    assert r.exit_code == 2 and "--init 'no-such-model'" in r.output and "check --init" in r.output, r.output
