"""The `tiler` command: exit codes, one-line errors, nothing written on bad input."""

import json
import os

import numpy as np
import pytest
import rasterio

from tests.conftest import labelled_folders, smooth_image, write_tif
from tiler.cli import main
from tiler.model import build_unet


@pytest.fixture
def scene(tmp_path):
    return write_tif(tmp_path / "scene.tif", smooth_image(3, 48, 56))


def _run(runner, *args):
    return runner.invoke(main, ["run", *map(str, args), "-q"], catch_exceptions=False)


def _assert_usage_error(result, text, folder):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert text in lines[0]
    assert "Traceback" not in result.output
    assert not [f for f in os.listdir(folder) if f.startswith("out") or ".part" in f]


def test_run_writes_mask_and_report(runner, tmp_path, scene, tiny_model):
    out, report = tmp_path / "mask.tif", tmp_path / "run.json"
    result = _run(runner, scene, "-o", out, "--model", tiny_model, "--report", report, "--overlap", "0.25")
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.dtypes[0]) == (56, 48, "uint8")
    doc = json.loads(report.read_text())
    assert doc["options"]["inference"]["overlap"] == 0.25 and doc["patches"]["predicted"] > 0


def test_missing_scene(runner, tmp_path, tiny_model):
    r = _run(runner, tmp_path / "nope.tif", "-o", tmp_path / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "does not exist", tmp_path)


def test_truncated_scene(runner, tmp_path, tiny_model):
    path = write_tif(tmp_path / "full.tif", smooth_image(3, 300, 300), tiled=False, compress="deflate")
    with open(path, "rb") as f:
        data = f.read()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    r = _run(runner, tmp_path / "cut.tif", "-o", tmp_path / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "cut.tif", tmp_path)


def test_not_a_raster(runner, tmp_path, tiny_model):
    (tmp_path / "notes.tif").write_text("hello")
    r = _run(runner, tmp_path / "notes.tif", "-o", tmp_path / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "cannot open", tmp_path)


def test_fewer_bands_than_the_model_needs(runner, tmp_path, tiny_model):
    two = write_tif(tmp_path / "two.tif", smooth_image(2, 30, 30).astype(np.uint16))
    r = _run(runner, two, "-o", tmp_path / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "needs 3 channels (red, green, blue)", tmp_path)


def test_model_that_is_not_a_tiler_model(runner, tmp_path, scene):
    plain = tmp_path / "plain.keras"
    build_unet(3, 2, depth=1, base_filters=2).save(plain)
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", plain)
    _assert_usage_error(r, "without tiler metadata", tmp_path)
    junk = tmp_path / "junk.keras"
    junk.write_text("junk")
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", junk)
    _assert_usage_error(r, "not a tiler model", tmp_path)


def test_patch_size_not_divisible_by_two_to_the_depth(runner, tmp_path, scene, tiny_model):
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--patch-size", "30")
    _assert_usage_error(r, "patch size 30 is not a positive multiple of 2**depth = 4", tmp_path)


@pytest.mark.parametrize("overlap", ["1", "-0.1", "1.5"])
def test_overlap_outside_unit_interval(runner, tmp_path, scene, tiny_model, overlap):
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--overlap", overlap)
    _assert_usage_error(r, "overlap must be a fraction in [0, 1)", tmp_path)


def test_output_folder_missing(runner, tmp_path, scene, tiny_model):
    r = _run(runner, scene, "-o", tmp_path / "no" / "such" / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "does not exist; create it first", tmp_path)


def test_output_folder_not_writable(runner, tmp_path, scene, tiny_model, monkeypatch):
    # Tests may run as root, for whom chmod does not bite: ask the check directly.
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode))
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", tiny_model)
    _assert_usage_error(r, "is not writable", tmp_path)


def test_existing_output_without_overwrite(runner, tmp_path, scene, tiny_model):
    out = tmp_path / "keep.tif"
    out.write_bytes(b"old")
    r = _run(runner, scene, "-o", out, "--model", tiny_model)
    assert r.exit_code == 2 and "pass --overwrite" in r.output
    assert out.read_bytes() == b"old"
    r = _run(runner, scene, "-o", out, "--model", tiny_model, "--overwrite")
    assert r.exit_code == 0 and out.read_bytes() != b"old"






def test_train_then_run_with_the_trained_model(runner, tmp_path):
    # A tiny real training run on synthetic labelled images.
    labelled_folders(tmp_path, 3, lambda img: img[0] > 128)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": "dark", "colour": "#000000"},
                                               {"name": "bright", "colour": "#FFFFFF"}]}))
    model = tmp_path / "m.keras"
    r = runner.invoke(main, ["train", str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"),
                             "-o", str(model), "--classes", str(classes),
                             "--val-images", str(tmp_path / "val" / "img"),
                             "--val-masks", str(tmp_path / "val" / "mask"),
                             "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
                             "--patch-size", "16", "--depth", "2", "--base-filters", "4"])
    assert r.exit_code == 0, r.output
    assert "epoch   1" in r.output and "best epoch" in r.output
    from tiler.model import read_info

    info = read_info(model)
    assert info.classes == ("dark", "bright") and info.channels == ("red", "green", "blue")
    history = info.training["history"]
    best = max(history, key=lambda row: row["val_mean_iou"])  # the first of equal scores: only improvements count
    assert [row["epoch"] for row in history] == [1, 2]
    assert info.training["best_epoch"] == best["epoch"] and info.training["command"].startswith("tiler train")
    assert info.training["val_scores"]["mean_iou"] == pytest.approx(best["val_mean_iou"])
    # The training domain: per channel the images' dtype and their 1st/99th percentiles (oracle: NumPy).
    imgs = np.stack([smooth_image(3, 40, 48, seed=10 + i) for i in range(2)], axis=1).reshape(3, -1)
    for c, values in zip(info.input_domain.channels, imgs):
        lo, hi = np.percentile(values.astype(float), [1, 99])
        assert c.dtype == "uint8" and abs(c.low - lo) <= 6 and abs(c.high - hi) <= 6  # sampled: every 7th pixel
    assert info.input_domain.pixel_size is None  # the images are not georeferenced
    # It recommends its inference settings: the training patch, overlap 0.125, spline; `tiler run` uses them.
    assert info.recommended() == (16, 0.125, "spline")
    r = _run(runner, tmp_path / "val" / "img" / "im0.tif", "-o", tmp_path / "pred.tif", "--model", model,
             "--report", tmp_path / "run.json")
    assert r.exit_code == 0, r.output
    grid = json.loads((tmp_path / "run.json").read_text())["grid"]
    assert (grid["patch_size"], grid["stride"]) == (16, 14)
    # Fine-tuning keeps the normalisation of the model it starts from.
    tuned = tmp_path / "tuned.keras"
    r = runner.invoke(main, ["train", str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"),
                             "-o", str(tuned), "--classes", str(classes), "--init", str(model),
                             "--val-images", str(tmp_path / "val" / "img"),
                             "--val-masks", str(tmp_path / "val" / "mask"),
                             "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                             "--patch-size", "16", "--depth", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert read_info(tuned).offset == info.offset and read_info(tuned).training["init"] == str(model)


def test_train_refuses_validation_images_that_are_training_images(runner, tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    write_tif(tmp_path / "img" / "a.tif", smooth_image(3, 20, 20), crs=None)
    write_tif(tmp_path / "mask" / "a.tif", np.zeros((1, 20, 20), np.uint8), crs=None)
    classes = tmp_path / "c.json"
    classes.write_text(json.dumps({"classes": [{"name": "x", "colour": "#000000"}]}))
    r = runner.invoke(main, ["train", str(tmp_path / "img"), str(tmp_path / "mask"), "-o",
                             str(tmp_path / "m.keras"), "--classes", str(classes),
                             "--val-images", str(tmp_path / "img"), "--val-masks", str(tmp_path / "mask")])
    assert r.exit_code == 2 and "also training images" in r.output


def test_train_with_index_channels_then_run(runner, tmp_path):
    """--channels may name spectral indices: built from the images' bands, stored, rebuilt by run."""
    labelled_folders(tmp_path, 4, lambda img: img[3] > img[2])
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": "bare", "colour": "#000000"},
                                               {"name": "green", "colour": "#00FF00"}]}))
    model = tmp_path / "m.keras"
    common = ["--classes", str(classes), "--val-images", str(tmp_path / "val" / "img"),
              "--val-masks", str(tmp_path / "val" / "mask"), "--epochs", "1", "--steps-per-epoch", "1",
              "--batch-size", "2", "--patch-size", "16", "--depth", "2", "--base-filters", "4", "-q"]
    r = runner.invoke(main, ["train", str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"),
                             "-o", str(model), "--band-names", "blue,green,red,nir",
                             "--channels", "red,nir,ndvi,ndwi", *common])
    assert r.exit_code == 0, r.output
    from tiler.model import read_info

    info = read_info(model)
    assert info.channels == ("red", "nir", "ndvi", "ndwi")
    assert [c.dtype for c in info.input_domain.channels] == ["uint8", "uint8", "float32", "float32"]
    assert all(-1 <= c.low <= c.high <= 1 for c in info.input_domain.channels[2:])
    # Unnamed bands without --band-names cannot feed index channels: a clear error.
    r = runner.invoke(main, ["train", str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"),
                             "-o", str(tmp_path / "x.keras"), "--channels", "red,nir,ndvi", *common])
    assert r.exit_code == 2 and "--band-names" in r.output
    scene = write_tif(tmp_path / "scene.tif", smooth_image(4, 40, 48, seed=5), crs=None,
                      descriptions=["blue", "green", "red", "nir"])
    r = _run(runner, scene, "-o", tmp_path / "pred.tif", "--model", model)
    assert r.exit_code == 0, r.output


_NO_KERAS = """
import sys
from tiler.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in ("keras", "tensorflow", "jax", "torch") if m in sys.modules)
print("EXIT", code, "LOADED", ",".join(loaded) or "-")
"""


@pytest.mark.parametrize("kind", ["empty", "text", "one band"])
def test_run_refuses_a_bad_scene_before_keras_loads(tmp_path, kind):
    """Issue 21.13: `tiler run` took 5-11 s (Keras's import) to refuse what `tiler info` refuses at once."""
    import subprocess
    import sys

    path = tmp_path / "scene.tif"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image\n")
    else:
        write_tif(path, np.zeros((1, 40, 40), np.uint8))
    proc = subprocess.run([sys.executable, "-c", _NO_KERAS, "run", str(path), "-o", str(tmp_path / "m.tif")],
                          capture_output=True, text=True, timeout=300)
    assert "EXIT 2 LOADED -" in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "m.tif").exists()


def test_training_modules_import_the_backend_quietly():
    """Issue 21.14: `tiler train` printed TensorFlow's absl start-up lines without -vv."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import tiler.model._unet, tiler.model._losses"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_run_whose_network_is_converted_imports_no_keras(tmp_path):
    """Issue 23: the network in OpenVINO's cache needs neither Keras nor TensorFlow (4 s of every run)."""
    import subprocess
    import sys

    pytest.importorskip("openvino")
    from tiler.model._runtime import keras_backend

    if keras_backend() != "tensorflow":
        pytest.skip("OpenVINO converts TensorFlow models: this backend runs Keras")
    scene = write_tif(tmp_path / "s.tif", (smooth_image(3, 300, 260) * 0.8).astype(np.uint8), crs=None)
    env = {**os.environ, "TILER_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _NO_KERAS, "run", scene, "-o", str(tmp_path / "m.tif"),
                               "--overwrite", "-q"], capture_output=True, text=True, timeout=300, env=env)
        runs.append(proc.stdout)
    assert "EXIT 0" in runs[0] and "keras" in runs[0], runs[0]  # the first run converts with Keras
    assert "EXIT 0 LOADED -" in runs[1], runs[1]  # the second reads the converted network


def test_bad_creation_option(runner, tmp_path, scene, tiny_model):
    r = _run(runner, scene, "-o", tmp_path / "out.tif", "--model", tiny_model, "--co", "COMPRESS")
    _assert_usage_error(r, "is not NAME=VALUE", tmp_path)
