"""The input's domain is checked against the model's (issue 9; DESIGN.md invariant 10).

Oracles: hand-computed percentiles and the rules of :mod:`tiler.domain` applied
to values whose verdict is obvious (8-bit counts, 16-bit digital numbers,
reflectance in [0, 1]).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.conftest import DUBAI, needs_shared, smooth_image, write_tif
from tests.reference import uint8_domain
from tiler.cli import main
from tiler.domain import ChannelDomain, InputDomain, InputScale, check_domain, measure_domain
from tiler.errors import UsageError
from tiler.model import DEFAULT_MODEL_PATH, read_info

RGB = ("red", "green", "blue")
MODEL = InputDomain(tuple(ChannelDomain(c, "uint8", 10.0, 240.0) for c in RGB), pixel_size=0.5)


def _samples(values):
    return [np.asarray(values, np.float64)] * 3


def test_measure_domain_is_the_1st_and_99th_percentile():
    values = np.arange(1001, dtype=np.float64)  # 0..1000: percentiles 10 and 990
    dom = measure_domain(["a"], [np.concatenate([values, [np.nan]])], ["uint16"], pixel_size=10.0)
    assert dom.channels[0] == ChannelDomain("a", "uint16", 10.0, 990.0)
    assert InputDomain.from_dict(json.loads(json.dumps(dom.to_dict()))) == dom


def test_an_8bit_scene_fits_an_8bit_model():
    v = check_domain(MODEL, _samples(np.linspace(0, 255, 500)), ["uint8"] * 3, pixel_size=0.6)
    assert v.ok and not v.warnings


@pytest.mark.parametrize("values, dtype, reason", [
    (np.linspace(7000, 20000, 500), "uint16", "maximum 255"),    # Landsat-8 digital numbers
    (np.linspace(0.02, 0.4, 500), "float32", "all below the model's range"),         # Sentinel-2 reflectance
    (np.linspace(-5000, -3000, 500), "float32", "beyond"),        # another unit entirely
])
def test_scenes_far_outside_are_refused(values, dtype, reason):
    v = check_domain(MODEL, _samples(values), [dtype] * 3)
    assert not v.ok and len(v.problems) == 3 and reason in v.problems[0]


@pytest.mark.parametrize("values", [np.full(500, 3.0), np.full(1, 40.0), np.full(500, 0.0), np.linspace(40, 40.5, 9)])
def test_a_uniform_scene_is_not_refused_for_its_narrow_range(values):
    """Issue 21.7: open sea, a padded tile or a 1x1 scene was 'a range 253000000000000x narrower'."""
    v = check_domain(MODEL, _samples(values), ["uint8"] * 3)
    assert v.ok, v.problems


def test_scaled_values_are_called_scaled_and_may_round_past_the_integer_maximum():
    """Issue 21.14: 257.1 against uint8's 255 after --input-scale is rounding, not another dtype."""
    v = check_domain(MODEL, _samples(np.linspace(12, 257.1, 500)), ["float32"] * 3, scaled=True)
    assert v.ok and not v.warnings
    v = check_domain(MODEL, _samples(np.linspace(12, 400, 500)), ["float32"] * 3, scaled=True)
    assert not v.ok and "float32 values after --input-scale" in v.problems[0] and "uint8" not in \
        v.problems[0].split("model trained")[0]


def test_a_constant_scene_runs_through_the_cli(runner, tmp_path, tiny_model):
    scene = write_tif(tmp_path / "sea.tif", np.full((3, 40, 40), 90, np.uint8))
    one = write_tif(tmp_path / "one.tif", np.full((3, 1, 1), 90, np.uint8))
    for s in (scene, one):
        r = runner.invoke(main, ["run", s, "-o", str(tmp_path / (os.path.basename(s) + ".mask.tif")),
                                 "--model", tiny_model, "-q"])
        assert r.exit_code == 0, r.output


def test_another_dtype_with_fitting_values_only_warns():
    v = check_domain(MODEL, _samples(np.linspace(0, 250, 500)), ["uint16"] * 3)
    assert v.ok and len(v.warnings) == 3 and "another dtype" in v.warnings[0]


def test_pixel_size_more_than_twice_off_warns():
    v = check_domain(MODEL, _samples(np.linspace(0, 255, 500)), ["uint8"] * 3, pixel_size=10.0)
    assert v.ok and any("pixel size 10 m is 20x" in w for w in v.warnings)
    assert not check_domain(MODEL, _samples(np.linspace(0, 255, 50)), ["uint8"] * 3, pixel_size=0.9).warnings


def test_input_scale_parsing_and_per_channel_expansion():
    s = InputScale.parse(["0.0625"])
    gain, bias = s.per_channel(["red", "green", "ndwi"], ["ndwi"])
    assert gain.tolist() == [0.0625, 0.0625, 1.0] and bias.tolist() == [0.0, 0.0, 0.0]
    s = InputScale.parse(["2,1", "3,0", "1,-1"])
    assert s.per_channel(RGB, ()) [0].tolist() == [2.0, 3.0, 1.0]
    with pytest.raises(UsageError, match="SCALE or SCALE,OFFSET"):
        InputScale.parse(["a,b"])
    with pytest.raises(UsageError, match="once"):
        InputScale.parse(["1", "2"]).per_channel(RGB, ())


@needs_shared(DUBAI)
def test_bundled_model_records_the_domain_of_its_training_images():
    info = read_info(DEFAULT_MODEL_PATH)
    dom = info.input_domain
    assert [c.name for c in dom.channels] == list(info.channels) and dom.pixel_size is None
    # Oracle: the percentiles of one training image lie inside the recorded range.
    from tiler.scene import open_scene

    with open_scene(DUBAI / "tile_1" / "images" / "image_part_001.jpg") as sc:
        img, _ = sc.read((0, sc.height), (0, sc.width), [1, 2, 3])
    for c, band in zip(dom.channels, img):
        lo, hi = np.percentile(band, [25, 75])
        assert c.dtype == "uint8" and c.low <= lo and hi <= c.high


# ------------------------------------------------------------ through the CLI

def _uint16_scene(tmp_path):
    img = smooth_image(3, 48, 56).astype(np.uint16) * 16 + 37  # 12-bit counts
    return write_tif(tmp_path / "l16.tif", img, descriptions=RGB)


def test_a_uint16_scene_is_refused_by_a_uint8_model(runner, tmp_path, tiny_model):
    r = runner.invoke(main, ["run", _uint16_scene(tmp_path), "-o", str(tmp_path / "out.tif"), "--model",
                             tiny_model, "-q"])
    assert r.exit_code == 2, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error: ")][0]
    assert "training domain" in line and "uint16" in line and "uint8" in line
    assert "--input-scale" in line and "--force" in line
    assert not os.path.exists(tmp_path / "out.tif")


def test_the_same_scene_runs_with_input_scale_and_matches_the_8bit_run(runner, tmp_path, tiny_model):
    import rasterio

    scene16 = _uint16_scene(tmp_path)
    scene8 = write_tif(tmp_path / "s8.tif", smooth_image(3, 48, 56), descriptions=RGB)
    r = runner.invoke(main, ["run", scene16, "-o", str(tmp_path / "a.tif"), "--model", tiny_model,
                             "--input-scale", "0.0625,-2.3125", "-q", "--output", "probability"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["run", scene8, "-o", str(tmp_path / "b.tif"), "--model", tiny_model, "-q",
                             "--output", "probability"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        # (v * 16 + 37) * 0.0625 - 2.3125 == v: the scaled scene is the 8-bit one.
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-5)


def test_force_runs_anyway_with_a_warning(runner, tmp_path, tiny_model):
    r = runner.invoke(main, ["run", _uint16_scene(tmp_path), "-o", str(tmp_path / "out.tif"), "--model",
                             tiny_model, "--force"])
    assert r.exit_code == 0, r.output
    assert "warning: --force" in r.output


def test_positional_band_mapping_is_stated_without_verbose(runner, tmp_path, tiny_model):
    scene = write_tif(tmp_path / "plain.tif", smooth_image(3, 40, 40), photometric="minisblack")
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "out.tif"), "--model", tiny_model])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if ln.startswith("note: bands 1, 2, 3")]
    assert len(notes) == 1 and "by position as red, green, blue" in notes[0] and "--bands" in notes[0]
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "q.tif"), "--model", tiny_model, "-q"])
    assert r.exit_code == 0 and "note:" not in r.output


def test_info_reports_bands_channels_and_the_verdict(runner, tmp_path, tiny_model):
    scene = _uint16_scene(tmp_path)
    r = runner.invoke(main, ["info", scene, "--model", tiny_model, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert (doc["width"], doc["height"], doc["crs"]) == (56, 48, "EPSG:32618")
    assert doc["pixel_size_m"] == pytest.approx(10.0)
    band = doc["groups"][0]["bands"][0]
    assert band["dtype"] == "uint16" and band["name"] == "red"
    raw = smooth_image(3, 48, 56).astype(np.float64) * 16 + 37
    assert raw[0].min() <= band["sampled"]["min"] and band["sampled"]["max"] <= raw[0].max()
    m = doc["model"]
    assert [c["built_from"] for c in m["channels"]] == ["band 1 (red)", "band 2 (green)", "band 3 (blue)"]
    assert m["domain"]["ok"] is False and m["grid"]["patches"] > 0
    text = runner.invoke(main, ["info", scene, "--model", tiny_model, "--input-scale", "0.0625"])
    assert text.exit_code == 0 and "domain     ok" in text.output


def test_tiny_model_fixture_records_a_uint8_domain(tiny_model):
    assert read_info(tiny_model).input_domain == uint8_domain(RGB)


def test_info_describes_a_scene_whose_bands_the_model_cannot_use(runner, tmp_path, tiny_model):
    scene = write_tif(tmp_path / "four.tif", smooth_image(4, 30, 30), photometric="minisblack")
    r = runner.invoke(main, ["info", scene, "--model", tiny_model])
    assert r.exit_code == 0, r.output
    assert "30 x 30 px" in r.output and "channels   cannot be built:" in r.output and "--bands" in r.output


def test_sampling_in_strips_reads_the_same_pixels(tmp_path):
    """Files without random access are sampled in full-width strips: 16 reads, the very same values."""
    from tiler.domain import sample_channels
    from tiler.scene import open_scene

    image = smooth_image(3, 300, 260)
    striped = write_tif(tmp_path / "striped.tif", image, tiled=False)
    tiled = write_tif(tmp_path / "tiled.tif", image)
    with open_scene(striped) as sc:
        assert sc.striped()
        calls = []

        def read(rows, cols):
            calls.append((rows, cols))
            return sc.read(rows, cols, [1, 2, 3])
        by_strip = sample_channels(read, sc.height, sc.width, strips=True)
        n_strips = len(calls)
        by_window = sample_channels(read, sc.height, sc.width)
    assert n_strips == 12 and len(calls) - n_strips == 12 * 10  # 300 // 24 rows, 260 // 24 columns of windows
    for a, b in zip(by_strip, by_window):
        np.testing.assert_array_equal(a, b)
    with open_scene(tiled) as sc:
        assert not sc.striped()


def test_info_shows_the_nodata_and_the_patch_grid_that_run_uses(runner, tmp_path):
    """Issue 21.10: info printed 'nodata None' and the grid of 256 px / 0.5 while run used the model's."""
    data = smooth_image(3, 300, 280)
    data[:, :20] = 0
    scene = write_tif(tmp_path / "collar.tif", data, nodata=0)
    floats = write_tif(tmp_path / "f.tif", data.astype(np.float32), nodata=float("nan"))
    r = runner.invoke(main, ["info", scene, "--model", "default", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["groups"][0]["nodata"] == 0
    r = runner.invoke(main, ["info", floats, "--json"])
    assert np.isnan(json.loads(r.output)["groups"][0]["nodata"])
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "m.tif"), "-q", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r.json").read_text())
    grid = doc["model"]["grid"]
    rec = read_info(DEFAULT_MODEL_PATH).recommended()
    assert (grid["patch_size"], grid["overlap"]) == (rec[0], rec[1])  # the model file's own recommendation
    assert grid["patch_size"] == report["grid"]["patch_size"] and grid["stride"] == report["grid"]["stride"]
    assert grid["patches"] == report["patches"]["grid"]


def test_a_model_without_a_pixel_size_says_the_scene_cannot_be_checked():
    """Issue 22: a model whose training imagery has no documented pixel size warns, once, where the scene's is
    known; nothing to say where neither is known."""
    unknown = InputDomain(MODEL.channels, pixel_size=None)
    v = check_domain(unknown, _samples(np.linspace(0, 255, 500)), ["uint8"] * 3, pixel_size=10.0)
    assert v.ok and len(v.warnings) == 1 and "cannot be checked" in v.warnings[0] and "10 m" in v.warnings[0]
    assert not check_domain(unknown, _samples(np.linspace(0, 255, 500)), ["uint8"] * 3).warnings


def test_a_class_map_given_as_the_scene_is_refused_and_noisy_uniform_imagery_is_not():
    """A colour-coded mask passed instead of its image ran at exit 0 with 'domain ok' (found trying a Dubai
    tile-6 mask as a new user). Oracle: six colours in 600 pixels is a palette; a uniform scene whose channels
    carry independent sensor noise of +-2 counts is imagery, and one colour is a uniform scene."""
    rng = np.random.default_rng(0)
    palette = np.array([[60, 16, 152], [132, 41, 246], [110, 193, 228], [254, 221, 58], [226, 169, 41],
                        [155, 155, 155]], np.float64)
    mask = palette[rng.integers(0, 6, 600)]
    v = check_domain(MODEL, [mask[:, k] for k in range(3)], ["uint8"] * 3)
    assert not v.ok and "6 distinct colours" in v.problems[0] and "class map" in v.problems[0]
    sea = 40 + rng.integers(-2, 3, (3, 600))
    assert check_domain(MODEL, list(sea.astype(np.float64)), ["uint8"] * 3).ok
    assert check_domain(MODEL, _samples(np.full(600, 40.0)), ["uint8"] * 3).ok


@needs_shared(DUBAI)
def test_a_dubai_mask_given_as_the_scene_is_exit_2_and_writes_nothing(runner, tmp_path):
    mask = DUBAI / "tile_6" / "masks" / "image_part_003.png"
    r = runner.invoke(main, ["run", str(mask), "-o", str(tmp_path / "m.tif")])
    assert r.exit_code == 2, r.output
    assert "class map" in r.output and not os.listdir(tmp_path)
