"""The processing grid at the model's pixel size (issue 37): reads resampled onto it, probabilities back onto the
scene's grid, checked against GDAL's own resampling (rasterio) as the oracle."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

import tiler
from tests.conftest import SENTINEL2, needs_shared, smooth_image
from tests.reference import mix_expected
from tiler import distributed
from tiler.cli import main
from tiler.domain import ChannelDomain, InputDomain
from tiler.engine import Block
from tiler.model import update_info
from tiler.regrid import to_scene_grid
from tiler.scene import AxisMap, ProcessingGrid, open_scene, processing_grid

UTM = CRS.from_epsg(32618)
T10 = Affine(10.0, 0.0, 435730.0, 0.0, -10.0, 4200000.0)


def _grid(factor: float, height: int, width: int, offset: float = 0.0) -> ProcessingGrid:
    return ProcessingGrid(T10 @ Affine.translation(offset, offset) @ Affine.scale(factor),
                          math.ceil((width - offset) / factor - 1e-9), math.ceil((height - offset) / factor - 1e-9),
                          factor, width, height, T10, col_offset=offset, row_offset=offset)


def _scene_values(pg: ProcessingGrid, probs: np.ndarray, valid: np.ndarray, strips, bands):
    """Run the blocks of ``probs`` cut into strips and column bands through to_scene_grid; every scene pixel must
    come exactly once."""
    def blocks():
        for c0, c1 in bands:
            for r0, r1 in strips:
                yield Block((r0, r1), (c0, c1), valid[r0:r1, c0:c1],
                            values=np.where(valid[r0:r1, c0:c1], probs[:, r0:r1, c0:c1], np.nan))

    out = np.full((probs.shape[0], pg.scene_height, pg.scene_width), np.nan, np.float32)
    ok = np.zeros((pg.scene_height, pg.scene_width), bool)
    seen = np.zeros(ok.shape, int)
    for b in to_scene_grid(blocks(), pg):
        (r0, r1), (c0, c1) = b.rows, b.cols
        out[:, r0:r1, c0:c1], ok[r0:r1, c0:c1] = b.values(), b.valid
        seen[r0:r1, c0:c1] += 1
    assert (seen == 1).all(), "every scene pixel in exactly one block"
    return out, ok


@pytest.mark.parametrize("factor,height,width,strips,bands,offset", [
    (3.0, 61, 50, [(0, 7), (7, 15), (15, 21)], [(0, 9), (9, 17)], 0.0),  # 10 m -> 30 m: Sentinel-2, DLR's model
    (2.5, 40, 30, [(0, 5), (5, 16)], [(0, 4), (4, 12)], 0.0),  # a factor that is no integer
    (0.5, 40, 30, [(0, 30), (30, 80)], [(0, 25), (25, 60)], 0.0),  # a finer processing grid: area average back
    (2.0, 41, 33, [(0, 6), (6, 22)], [(0, 9), (9, 18)], -1.5),  # Landsat: the 30 m group's grid, off the pan's
])
def test_probabilities_go_back_as_gdal_resamples_them(factor, height, width, strips, bands, offset):
    """The way back equals rasterio's reproject of the whole probability array (bilinear from a coarser grid,
    average from a finer one), edges included, for blocks in any strips and column bands."""
    pg = _grid(factor, height, width, offset)
    rng = np.random.default_rng(1)
    probs = rng.random((2, pg.height, pg.width)).astype(np.float32)
    out, ok = _scene_values(pg, probs, np.ones((pg.height, pg.width), bool), strips, bands)
    oracle = np.full_like(out, np.nan)
    reproject(probs, oracle, src_transform=pg.transform, src_crs=UTM, dst_transform=T10, dst_crs=UTM,
              resampling=Resampling.bilinear if factor > 1 else Resampling.average)
    assert ok.all()
    np.testing.assert_allclose(out, oracle, atol=1e-6, rtol=0)
    whole, _ = _scene_values(pg, probs, np.ones((pg.height, pg.width), bool), [(0, pg.height)], [(0, pg.width)])
    assert np.array_equal(whole, out), "the same bits whatever the strips and column bands"


def test_a_scene_pixel_is_nodata_where_the_processing_pixel_under_its_centre_is():
    pg = _grid(3.0, 30, 36)
    probs = np.full((2, pg.height, pg.width), 0.5, np.float32)
    valid = np.ones((pg.height, pg.width), bool)
    valid[2:4, 5] = False
    out, ok = _scene_values(pg, probs, valid, [(0, 4), (4, 10)], [(0, 6), (6, 12)])
    rows = np.minimum(np.arange(30) // 3, pg.height - 1)
    cols = np.minimum(np.arange(36) // 3, pg.width - 1)
    expected = valid[rows[:, None], cols[None, :]]
    np.testing.assert_array_equal(ok, expected)
    assert np.isnan(out[:, ~expected]).all()
    np.testing.assert_array_equal(out[:, expected], 0.5)  # neighbours of a hole renormalise over valid taps


def test_axis_map_partitions_an_axis_among_blocks():
    m = AxisMap.build(100, 34, 3.0)
    spans = [m.span(a, b, 34) for a, b in ((0, 10), (10, 11), (11, 34))]
    assert spans[0][0] == 0 and spans[-1][1] == 100
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
    assert np.allclose(m.weight.sum(axis=1), 1)


# ---------------------------------------------------------------- the processing grid of a scene


def _model_at(tmp_path, mix_model, pixel_size):
    path = tmp_path / f"mix-{pixel_size}.keras"
    shutil.copy(mix_model, path)
    update_info(path, domain=InputDomain(tuple(ChannelDomain(n, "uint8", 0.0, 255.0)
                                               for n in ("red", "green", "blue")), pixel_size))
    return str(path)


@pytest.mark.parametrize("pixel,expected", [(10.3, 1.0), (9.6, 1.0), (20.0, 2.0), (5.0, 0.5)])
def test_the_scene_is_resampled_only_beyond_the_tolerance(tif, pixel, expected):
    scene = tif(smooth_image(3, 40, 50))
    with open_scene(scene) as sc:
        pg = processing_grid(sc, pixel)
        off = processing_grid(sc, pixel, resample="off")
    assert pg.factor == pytest.approx(expected) and not off.resampled
    if pg.resampled:
        assert pg.transform.a == pytest.approx(pixel) and pg.transform.c == T10.c and pg.transform.f == T10.f
        assert pg.width == math.ceil(50 / expected) and pg.height == math.ceil(40 / expected)


def test_a_run_at_the_models_pixel_size_equals_gdal_resampling_the_scene_around_the_model(tmp_path, tif, mix_model):
    """A 10 m scene and a pointwise model trained at 20 m: the output is the model on the scene averaged onto
    20 m (rasterio), resampled back bilinearly onto the scene's 10 m grid (rasterio); nodata stays nodata."""
    img = smooth_image(3, 90, 70, seed=4).astype(np.uint8)
    img[:, 40:46, 10:18] = 0
    scene = tif(img, nodata=0)
    model = _model_at(tmp_path, mix_model, 20.0)
    out = tmp_path / "p.tif"
    report = tiler.run_scene(scene, out, model=model, output="probability", patch_size=16, overlap=0.25,
                             strip_rows=9, band_width=16)
    assert report.processing_grid["factor"] == 2.0 and report.processing_grid["width"] == 35
    assert report.processing_grid["output"] == "scene"
    with rasterio.open(out) as ds, rasterio.open(scene) as src:
        probs = ds.read()
        assert (ds.crs, ds.transform, ds.width, ds.height) == (src.crs, src.transform, src.width, src.height)
    coarse = np.full((3, 45, 35), np.nan, np.float32)
    reproject(np.where(img == 0, np.nan, img.astype(np.float32)), coarse, src_transform=T10, src_crs=UTM,
              src_nodata=np.nan, dst_transform=T10 @ Affine.scale(2), dst_crs=UTM, dst_nodata=np.nan,
              resampling=Resampling.average)
    back = np.full((2, 90, 70), np.nan, np.float32)
    reproject(mix_expected(coarse).astype(np.float32), back, src_transform=T10 @ Affine.scale(2), src_crs=UTM,
              dst_transform=T10, dst_crs=UTM, src_nodata=np.nan, dst_nodata=np.nan,
              resampling=Resampling.bilinear)
    invalid = (img == 0).all(axis=0)
    assert np.isnan(probs[:, invalid]).all(), "an input nodata pixel is never labelled"
    hole = np.zeros_like(invalid)
    hole[36:50, 6:22] = True  # where the coarse pixels mix valid and nodata pixels
    far = ~hole
    np.testing.assert_allclose(probs[:, far], back[:, far], atol=1e-4, rtol=0)


def test_grid_model_writes_the_processing_grid(tmp_path, tif, mix_model):
    scene = tif(smooth_image(3, 61, 50))
    model = _model_at(tmp_path, mix_model, 30.0)
    out = tmp_path / "m.tif"
    report = tiler.run_scene(scene, out, model=model, patch_size=16, grid="model")
    with rasterio.open(out) as ds:
        assert ds.transform == T10 @ Affine.scale(3) and (ds.width, ds.height) == (17, 21)
    assert report.processing_grid["output"] == "model"


def test_grid_model_says_when_the_model_has_no_grid_of_its_own(tmp_path, tif, mix_model, caplog):
    """The bundled-style model records no pixel size: --grid model writes the scene's grid and says why."""
    scene = tif(smooth_image(3, 40, 50))
    with caplog.at_level("INFO"):
        report = tiler.run_scene(scene, tmp_path / "m.tif", model=mix_model, patch_size=16, grid="model")
    assert report.processing_grid["output"] == "scene"
    assert "--grid model: the processing grid is the scene's grid: the model records no pixel size" in caplog.text


def test_a_scene_in_parts_equals_one_process(tmp_path, tif, mix_model):
    scene = tif(smooth_image(3, 160, 70, seed=2))
    model = _model_at(tmp_path, mix_model, 20.0)
    one = tmp_path / "one.tif"
    tiler.run_scene(scene, one, model=model, output="probability", patch_size=16, overlap=0.25, strip_rows=12)
    parts = tmp_path / "parts.tif"
    rep = distributed.run(scene, parts, model=model, output="probability", patch_size=16, overlap=0.25,
                          strip_rows=12, parts=3)
    assert rep.parts["total"] == 3 and rep.processing_grid["factor"] == 2.0
    with rasterio.open(one) as a, rasterio.open(parts) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)


def test_a_scene_at_the_models_pixel_size_is_run_as_before(tmp_path, tif, mix_model):
    scene = tif(smooth_image(3, 61, 50))
    model = _model_at(tmp_path, mix_model, 10.2)
    auto, off = tmp_path / "auto.tif", tmp_path / "off.tif"
    rep = tiler.run_scene(scene, auto, model=model, patch_size=16)
    tiler.run_scene(scene, off, model=model, patch_size=16, resample="off")
    assert rep.processing_grid["factor"] == 1.0 and "within 5%" in rep.processing_grid["reason"]
    assert auto.read_bytes() == off.read_bytes()



@needs_shared(SENTINEL2)
def test_sentinel2_with_the_30_m_cloud_model_equals_the_scene_resampled_beforehand(tmp_path, runner):
    """The oracle: the 10 m bands averaged onto 30 m by rasterio into a manifest, the model run there (its own
    pixel size: no resampling), its probabilities upsampled bilinearly by rasterio, argmax: the run on the 10 m
    folder gives the same class on >= 99 % of pixels, on the scene's own grid."""
    pytest.importorskip("ukis_csmask")
    files = ["s2_B02.jp2", "s2_B03.jp2", "s2_B04.jp2", "s2_B08.jp2"]
    with rasterio.open(SENTINEL2 / files[0]) as src:
        t, height, width = src.transform, src.height, src.width
    t30, h30, w30 = t @ Affine.scale(3), math.ceil(height / 3), math.ceil(width / 3)
    for name in files:
        with rasterio.open(SENTINEL2 / name) as src:
            coarse = np.zeros((h30, w30), np.float32)
            reproject(src.read(1).astype(np.float32), coarse, src_transform=t, src_crs=src.crs, src_nodata=0,
                      dst_transform=t30, dst_crs=src.crs, dst_nodata=0, resampling=Resampling.average)
            with rasterio.open(tmp_path / name.replace(".jp2", ".tif"), "w", driver="GTiff", width=w30,
                               height=h30, count=1, dtype="float32", crs=src.crs, transform=t30, nodata=0) as dst:
                dst.write(coarse, 1)
    (tmp_path / "s2_30m.toml").write_text(
        'reference = "30m"\n[groups.30m]\nfiles = ["s2_B02.tif", "s2_B03.tif", "s2_B04.tif", "s2_B08.tif"]\n'
        'bands = ["blue", "green", "red", "nir"]\nscale = 0.0001\nnodata = 0\n')
    r = runner.invoke(main, ["run", str(tmp_path / "s2_30m.toml"), "--model", "clouds-s2-l1c-4b", "-o",
                             str(tmp_path / "p30.tif"), "--output", "probability", "--force", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["run", str(SENTINEL2), "--model", "clouds-s2-l1c-4b", "-o", str(tmp_path / "c.tif"),
                             "--report", str(tmp_path / "run.json"), "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run.json").read_text())["processing_grid"]["factor"] == 3.0
    with rasterio.open(tmp_path / "p30.tif") as ds:
        p30 = ds.read()
    back = np.full((p30.shape[0], height, width), np.nan, np.float32)
    reproject(p30, back, src_transform=t30, src_crs=UTM, dst_transform=t, dst_crs=UTM, src_nodata=np.nan,
              dst_nodata=np.nan, resampling=Resampling.bilinear)
    oracle = np.argmax(np.nan_to_num(back, nan=-1), axis=0)
    with rasterio.open(tmp_path / "c.tif") as ds:
        classes = ds.read(1)
        assert (ds.transform, ds.width, ds.height) == (t, width, height)
    valid = classes != 255
    assert valid.mean() > 0.99
    assert (classes[valid] == oracle[valid]).mean() >= 0.99


def test_the_grid_of_a_band_group_at_the_models_pixel_size_is_the_processing_grid(tmp_path):
    """A 15 m reference and a 30 m group whose grid starts half a reference pixel away (Landsat's pan and
    multispectral bands): for a 30 m model the processing grid is the 30 m group's own grid, and that group is
    read on it as it is, pixel for pixel."""
    from tests.conftest import write_tif

    t15 = Affine(15.0, 0.0, 452467.5, 0.0, -15.0, 3408652.5)
    t30 = Affine(30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0)
    rng = np.random.default_rng(3)
    pan = rng.integers(1, 4000, (1, 121, 125)).astype(np.uint16)
    ms = rng.integers(1, 4000, (1, 60, 62)).astype(np.uint16)
    write_tif(tmp_path / "pan.tif", pan, transform=t15, crs="EPSG:32616")
    write_tif(tmp_path / "ms.tif", ms, transform=t30, crs="EPSG:32616")
    (tmp_path / "scene.toml").write_text('[groups.pan]\nfiles = ["pan.tif"]\nbands = ["pan"]\n'
                                         '[groups.ms]\nfiles = ["ms.tif"]\nbands = ["red"]\n')
    with open_scene(str(tmp_path / "scene.toml")) as sc:
        assert sc.reference == "pan"
        pg = processing_grid(sc, 30.0)
        assert pg.snapped_to == "ms" and pg.factor == 2.0 and (pg.col_offset, pg.row_offset) == (-1.5, -1.5)
        assert pg.transform.a == 30.0 and (pg.transform.c - t30.c) % 30 == 0 and (pg.transform.f - t30.f) % 30 == 0
        data, valid = sc.read((0, pg.height), (0, pg.width), [2], grid=pg)
        col0, row0 = int((t30.c - pg.transform.c) / 30), int((pg.transform.f - t30.f) / 30)
        np.testing.assert_array_equal(data[0, row0:row0 + 60, col0:col0 + 62], ms[0].astype(np.float32))
        assert valid[row0:row0 + 60, col0:col0 + 62].all()
        rows = pg.rows()
        assert rows.nearest[0] == 1 and rows.span(0, pg.height, pg.height) == (0, 121)
