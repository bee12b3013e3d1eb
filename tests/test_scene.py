"""Scenes of several band groups: manifests, sensor folders, resampled reads, runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from scipy import ndimage

from tests.conftest import SENTINEL2, SHARED, needs_shared, write_tif
from tests.reference import build_mix_model
from tiler import predict
from tiler.cli import main
from tiler.errors import SceneReadError
from tiler.registration import register_scene
from tiler.scene import open_scene

LANDSAT = SHARED / "landsat8_LC80200392015216"


def _two_groups(tmp_path, *, shift_px=(0.0, 0.0), texture=False):
    """A 10 m group (red, green) and a 20 m group (blue) of one smooth field.

    ``texture`` adds broadband detail (phase correlation needs more than one
    smooth wave); ``shift_px`` misplaces the 20 m group by (row, col) of its pixels.
    """
    rows, cols = np.mgrid[0:400, 0:400] + 0.5
    field = 1000 + 300 * np.sin(rows / 23.0) * np.cos(cols / 17.0)
    if texture:
        field += 800 * ndimage.gaussian_filter(np.random.default_rng(5).random((400, 400)), 2.0)
    coarse = field.reshape(200, 2, 200, 2).mean(axis=(1, 3))
    t10 = Affine(10, 0, 500000, 0, -10, 4000000)
    t20 = Affine(20, 0, 500000 + 20 * shift_px[1], 0, -20, 4000000 - 20 * shift_px[0])
    write_tif(tmp_path / "r.tif", field[None].astype(np.float32), transform=t10)
    write_tif(tmp_path / "g.tif", (field * 0.5)[None].astype(np.float32), transform=t10)
    write_tif(tmp_path / "b.tif", coarse[None].astype(np.float32), transform=t20)
    path = tmp_path / "scene.toml"
    path.write_text('reference = "fine"\n[groups.fine]\nfiles = ["r.tif", "g.tif"]\nbands = ["red", "green"]\n'
                    '[groups.coarse]\nfiles = ["b.tif"]\nbands = ["blue"]\nscale = 0.5\noffset = 10\n')
    return str(path), field


def test_manifest_groups_read_on_the_reference_grid(tmp_path):
    path, field = _two_groups(tmp_path)
    with open_scene(path) as sc:
        assert (sc.kind, sc.reference, sc.height, sc.width, sc.count) == ("manifest", "fine", 400, 400, 3)
        assert sc.band_names == ("red", "green", "blue")
        data, valid = sc.read((100, 164), (50, 150), [3, 1])
    assert data.shape == (2, 64, 100) and valid.all()
    np.testing.assert_allclose(data[1], field[100:164, 50:150], rtol=1e-6)
    # Bilinear upsampling of the 2x2 block means of a smooth field, then scale/offset.
    np.testing.assert_allclose(data[0], field[100:164, 50:150] * 0.5 + 10, rtol=2e-3)


def test_reflect_padding_applies_to_resampled_groups(tmp_path):
    path, _ = _two_groups(tmp_path)
    with open_scene(path) as sc:
        inner, _ = sc.read((0, 40), (0, 40), [3])
        padded, valid = sc.read((-8, 40), (-8, 40), [3])
    assert valid.all()
    np.testing.assert_array_equal(padded[:, 8:, 8:], inner)
    np.testing.assert_array_equal(padded[:, :8, 8:], inner[:, 8:0:-1][:, :8])


@pytest.mark.parametrize("text, match", [
    ('[groups.a]\nfiles = ["missing.tif"]\nbands = ["red"]\n', "does not exist"),
    ('[groups.a]\nfiles = ["r.tif"]\nbands = ["red", "nir"]\n', "must name each of the group's 1 band"),
    ('[groups.a]\nfiles = ["r.tif"]\nbands = ["red"]\ncolour = 1\n', "unknown key"),
    ('[groups.a]\nfiles = ["r.tif"]\nbands = ["red"]\nresampling = "fancy"\n', "resampling 'fancy'"),
    ('reference = "b"\n[groups.a]\nfiles = ["r.tif"]\nbands = ["red"]\n', "reference 'b' is not one of"),
    ('[groups.a\n', "not valid TOML"),
])
def test_manifest_errors_name_the_problem(tmp_path, text, match):
    _two_groups(tmp_path)
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(SceneReadError, match=match):
        open_scene(tmp_path / "bad.toml")


def test_group_files_must_share_a_grid(tmp_path):
    _two_groups(tmp_path)
    (tmp_path / "mixed.toml").write_text('[groups.a]\nfiles = ["r.tif", "b.tif"]\nbands = ["red", "blue"]\n')
    with pytest.raises(SceneReadError, match="must share a grid"):
        open_scene(tmp_path / "mixed.toml")


def test_unrecognised_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SceneReadError, match="not a recognised scene layout"):
        open_scene(tmp_path)


@needs_shared(SENTINEL2)
def test_sentinel2_folder_layout():
    with open_scene(SENTINEL2) as sc:
        assert sc.kind == "sentinel2" and sc.reference == "10m"
        assert [g.name for g in sc.groups] == ["10m", "20m", "60m"]
        assert sc.band_names[:4] == ("blue", "green", "red", "nir")
        assert "swir1" in sc.band_names and "nir2" in sc.band_names
        # The 10 m grid starts 10 m east of the 20 m grid: groups are placed by transform.
        assert sc.grid("20m").placed_by == "transform"
        data, valid = sc.read((0, 64), (0, 64), [sc.band_names.index("swir1") + 1])
        with rasterio.open(SENTINEL2 / "s2_B11.jp2") as ds:
            raw = ds.read(1, window=((0, 33), (0, 33))).astype(np.float64) * 1e-4
    assert valid.all()
    # Reference pixel (r, c) centre lies at 20 m pixel ((r + .5) / 2, (c + 1.5) / 2): bilinear
    # between the 20 m neighbours stays within their range.
    assert raw.min() - 1e-6 <= data.min() and data.max() <= raw.max() + 1e-6


@needs_shared(LANDSAT)
def test_landsat_folder_layout_uses_mtl_scaling():
    with open_scene(LANDSAT) as sc:
        assert sc.kind == "landsat" and sc.reference == "pan"
        ms = sc.group("ms")
        assert [b.name for b in ms.bands][:7] == ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
        assert ms.bands[1].scale == pytest.approx(2e-5) and ms.bands[1].offset == pytest.approx(-0.1)
        data, valid = sc.read((500, 600), (500, 600), [sc.band_names.index("red") + 1])
    assert valid.all() and 0.0 < float(np.median(data)) < 0.5  # top-of-atmosphere reflectance


def test_run_on_a_manifest_registers_and_reports(tmp_path):
    path, field = _two_groups(tmp_path, texture=True)
    model = build_mix_model(tmp_path / "mix.keras")  # channels red, green, blue
    out, report = tmp_path / "mask.tif", tmp_path / "run.json"
    result = CliRunner().invoke(main, ["run", path, "--out", str(out), "--model", model, "--output", "probability",
                                       "--report", str(report), "-q"])
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    g = rep["registration"]["groups"]["coarse"]
    assert g["status"] == "ok" and max(abs(v) for v in g["shift_group_px"]) < 0.05
    assert rep["scene"]["kind"] == "manifest" and "register" in rep["seconds"]
    with open_scene(path) as sc:  # the same (deterministic) registration, then the whole scene in memory
        register_scene(sc).apply(sc)
        image, _ = sc.read((0, 400), (0, 400), [1, 2, 3])
    with rasterio.open(out) as ds:
        got = ds.read()
        assert ds.transform == Affine(10, 0, 500000, 0, -10, 4000000)
    np.testing.assert_allclose(got, predict(image, model=model), atol=1e-4)
    off = CliRunner().invoke(main, ["run", path, "--out", str(tmp_path / "m2.tif"), "--model", model,
                                    "--registration", "off", "--report", str(report), "--overwrite", "-q"])
    assert off.exit_code == 0, off.output
    assert json.loads(report.read_text())["registration"]["off"] is True


def test_register_command_prints_and_writes_report(tmp_path):
    path, _ = _two_groups(tmp_path, shift_px=(0.4, -0.7), texture=True)
    report = tmp_path / "shifts.json"
    result = CliRunner().invoke(main, ["register", path, "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "coarse" in result.output and "translation" in result.output
    g = json.loads(report.read_text())["groups"]["coarse"]
    np.testing.assert_allclose(g["shift_group_px"], [0.4, -0.7], atol=0.05)
    np.testing.assert_allclose(g["shift_m"], [-8.0, -14.0], atol=1.0)


def test_sentinel2_baseline_04_offset_from_the_product_metadata(tmp_path):
    t10, t20 = Affine(10, 0, 0, 0, -10, 1000), Affine(20, 0, 0, 0, -20, 1000)
    for band, t, size in (("B02", t10, 40), ("B03", t10, 40), ("B8A", t20, 20)):
        write_tif(tmp_path / f"T18SVG_20230101_{band}.jp2", np.full((1, size, size), 1500, np.uint16),
                  transform=t, driver="GTiff")
    offsets = "".join(f'<RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>' for i in range(13))
    (tmp_path / "MTD_MSIL1C.xml").write_text(
        f"<root><QUANTIFICATION_VALUE unit=\"none\">10000</QUANTIFICATION_VALUE>{offsets}</root>")
    with open_scene(tmp_path) as sc:
        assert sc.kind == "sentinel2" and [g.name for g in sc.groups] == ["10m", "20m"]
        assert sc.band(1).offset == pytest.approx(-0.1) and sc.band(1).saturation == 65535
        data, _ = sc.read((0, 8), (0, 8), [1, 3])
        assert "MTD_MSIL1C.xml" in " ".join(sc.notes)
    np.testing.assert_allclose(data, 0.05, rtol=1e-5)  # (1500 - 1000) / 10000


def test_worldview3_swir_names_keep_their_common_meaning(tmp_path):
    for kind, count in (("P", 1), ("M", 8), ("A", 8)):
        write_tif(tmp_path / f"6010_{kind}.tif", np.ones((count, 16, 16), np.uint16),
                  transform=Affine(0.3, 0, 0, 0, -0.3, 0))
    with open_scene(tmp_path) as sc:
        lookup = sc.band_lookup()
        assert sc.band(lookup["swir1"]).name == "wv3_swir3"  # 1640-1680 nm, the 1.6 um SWIR
        assert sc.band(lookup["swir2"]).name == "wv3_swir6"
        assert sc.band(lookup["rededge1"]).name == "rededge"
