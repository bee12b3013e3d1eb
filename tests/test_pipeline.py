"""The streaming engine: invariants of DESIGN.md against independent oracles."""

import os
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning

import tiler
from tests.conftest import DUBAI, SENTINEL2, needs_shared, smooth_image
from tests.reference import build_tiny_unet, mix_expected
from tiler.errors import BandMismatchError, OutputExistsError
from tiler.scene import open_scene


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(), ds.profile, ds.tags()


def _leftovers(folder):
    return [f for f in os.listdir(folder) if ".part" in f]


@pytest.mark.parametrize("strip_rows,batch_size,band_width", [(1, 1, 8192), (40, 3, 8192), (100, 8, 64),
                                                              (1000, 5, 77)])
def test_streamed_equals_in_memory(tmp_path, tif, tiny_model, strip_rows, batch_size, band_width):
    img = smooth_image(3, 157, 211)
    scene = tif(img)
    out = tmp_path / "p.tif"
    tiler.run_scene(scene, out, model=tiny_model, output="probability", overlap=0.5,
                    strip_rows=strip_rows, batch_size=batch_size, band_width=band_width)
    streamed, _, _ = _read(out)
    expected = tiler.predict(img, model=tiny_model, overlap=0.5)
    assert streamed.shape == expected.shape == (3, 157, 211)
    assert np.abs(streamed - expected).max() <= 1e-5


@needs_shared(DUBAI)
@pytest.mark.parametrize("strip_rows,batch_size", [(16, 2), (200, 16)])
def test_streamed_equals_in_memory_on_a_real_scene(tmp_path, tiny_model, strip_rows, batch_size):
    scene = str(DUBAI / "tile_2" / "images" / "image_part_004.jpg")
    out = tmp_path / "p.tif"
    report = tiler.run_scene(scene, out, model=tiny_model, output="probability",
                             strip_rows=strip_rows, batch_size=batch_size, overlap=0.25)
    streamed, profile, _ = _read(out)
    with open_scene(scene) as sc:
        img, _ = sc.read((0, sc.height), (0, sc.width), [1, 2, 3])
    expected = tiler.predict(img, model=tiny_model, overlap=0.25)
    assert np.abs(streamed - expected).max() <= 1e-5
    assert report.scene["band_mapping"]["method"] == "names"
    assert profile["crs"] is None


@pytest.mark.parametrize("shape", [(1, 1), (5, 300), (97, 13), (130, 64), (64, 130)])
@pytest.mark.parametrize("window", ["spline", "hann", "gaussian", "triangle", "boxcar"])
def test_constant_model_gives_exactly_the_constant(tmp_path, tif, constant_model, shape, window):
    scene = tif(smooth_image(3, *shape))
    out = tmp_path / "c.tif"
    tiler.run_scene(scene, out, model=constant_model, output="probability", window=window,
                    patch_size=16, overlap=0.5, strip_rows=7)
    probs, _, _ = _read(out)
    assert np.all(probs[0] == 0.25) and np.all(probs[1] == 0.75)


@pytest.mark.parametrize("patch,overlap", [(16, 0.0), (32, 0.25), (32, 0.5), (24, 0.75)])
@pytest.mark.parametrize("window", ["spline", "hann", "boxcar"])
def test_channel_mix_model_is_blended_exactly(tmp_path, tif, mix_model, patch, overlap, window):
    # A 1x1 channel mix is a pointwise function: any normalised blend must
    # return the mixed image itself, at the edges too.
    img = smooth_image(3, 61, 45, seed=3)
    out = tmp_path / "m.tif"
    tiler.run_scene(tif(img), out, model=mix_model, output="probability", patch_size=patch,
                    overlap=overlap, window=window, strip_rows=20)
    probs, _, _ = _read(out)
    np.testing.assert_allclose(probs, mix_expected(img), atol=1e-5, rtol=0)


def test_nodata_in_is_nodata_out_and_empty_patches_are_skipped(tmp_path, tif, tiny_model):
    img = smooth_image(3, 120, 150).astype(np.uint16) + 1
    img[:, :, :70] = 0  # a wide nodata band on the left
    img[:, 100:104, 120:125] = 0
    scene = tif(img, nodata=0)
    out = tmp_path / "n.tif"
    report = tiler.run_scene(scene, out, model=tiny_model, output="class", overlap=0.5)
    cls, profile, _ = _read(out)
    invalid = np.all(img == 0, axis=0)
    assert profile["nodata"] == 255
    np.testing.assert_array_equal(cls[0] == 255, invalid)
    assert report.patches["skipped_nodata"] > 0
    assert report.patches["predicted"] + report.patches["skipped_nodata"] == report.patches["grid"]
    probs_out = tmp_path / "np.tif"
    tiler.run_scene(scene, probs_out, model=tiny_model, output="probability", overlap=0.5)
    probs, _, _ = _read(probs_out)
    np.testing.assert_array_equal(np.isnan(probs).all(axis=0), invalid)
    assert np.isfinite(probs[:, ~invalid]).all()




@needs_shared(SENTINEL2)
def test_output_keeps_the_reference_grid_of_a_real_georeferenced_scene(tmp_path, model_dir):
    model = build_tiny_unet(model_dir / "one_band.keras", channels=("red",), classes=("x", "y"))
    scene = str(SENTINEL2 / "s2_B04.jp2")
    out = tmp_path / "s2.tif"
    tiler.run_scene(scene, out, model=model, overlap=0.0, batch_size=32, patch_size=64)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.crs.to_epsg() == 32618
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height) == (1933, 1947)


def test_scene_without_georeferencing_runs_without_warning(tmp_path, tiny_model):
    img = smooth_image(3, 50, 60)
    png = tmp_path / "plain.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=60, height=50, count=3, dtype="uint8") as ds:
            ds.write(img)
    out = tmp_path / "m.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiler.run_scene(png, out, model=tiny_model)
    _, profile, _ = _read(out)
    assert profile["crs"] is None and (profile["width"], profile["height"]) == (60, 50)


def test_failure_midway_leaves_nothing_at_out(tmp_path, tif, tiny_model):
    scene = tif(smooth_image(3, 200, 200))
    out = tmp_path / "m.tif"

    def explode(done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiler.run_scene(scene, out, model=tiny_model, progress=explode, strip_rows=16)
    assert not out.exists() and _leftovers(tmp_path) == []




def test_existing_output_needs_overwrite(tmp_path, tif, tiny_model):
    scene = tif(smooth_image(3, 40, 40))
    out = tmp_path / "m.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        tiler.run_scene(scene, out, model=tiny_model)
    assert out.read_bytes() == b"precious"
    tiler.run_scene(scene, out, model=tiny_model, overwrite=True)
    assert _read(out)[0].shape == (1, 40, 40) and _leftovers(tmp_path) == []


def test_same_bytes_whatever_strip_height_batch_size_or_threads(tmp_path, tif, tiny_model):
    """DESIGN invariant 7: the same output *file*, byte for byte (not only its decoded pixels), whatever the
    strip height, batch size, read-ahead thread and GDAL's compression threads."""
    import hashlib

    scene = tif(smooth_image(3, 150, 170, seed=5))
    digests = set()
    for i, (strip_rows, batch, prefetch, co) in enumerate([(16, 1, False, {}), (64, 4, True, {}),
                                                          (512, 16, True, {"NUM_THREADS": "ALL_CPUS"})]):
        out = tmp_path / f"m{i}.tif"
        tiler.run_scene(scene, out, model=tiny_model, strip_rows=strip_rows, batch_size=batch, prefetch=prefetch,
                        creation_options=co)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_band_mapping_by_description_and_explicit_bands(tmp_path, tif, tiny_model):
    img = smooth_image(4, 40, 40)
    named = tif(img, descriptions=["nir", "blue", "green", "red"])
    with open_scene(named) as sc:
        assert sc.map_channels(("red", "green", "blue")).indexes == (4, 3, 2)
        assert sc.map_channels(("red", "green", "blue"), bands=[1, 2, 3]).method == "explicit"
    unnamed4 = tif(img.astype(np.uint16), name="u4.tif")  # GDAL names uint8 RGB(A) itself
    with open_scene(unnamed4) as sc, pytest.raises(BandMismatchError, match="Pass --bands"):
        sc.map_channels(("red", "green", "blue"))
    two = tif(img[:2].astype(np.uint16), name="two.tif")
    with pytest.raises(BandMismatchError, match=r"needs 3 channels \(red, green, blue\) .* has 2 band"):
        tiler.run_scene(two, tmp_path / "x.tif", model=tiny_model)
    assert not (tmp_path / "x.tif").exists()








@pytest.mark.parametrize("parts", [None, 2])
def test_gdal_block_cache_is_the_run_s_megabytes(tmp_path, tif, tiny_model, monkeypatch, parts):
    """``gdal_cache_mb`` reaches GDAL as MB. rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64,
    in bytes: 64 was a cache of 64 bytes, which decoded a pixel-interleaved tile again for every band.
    After the run, the process's cache is what it was."""
    import functools

    from rasterio.env import get_gdal_config

    import tiler.engine as engine
    from tiler import distributed

    seen = []

    class Recorded(engine.Accumulator):
        def __init__(self, *args, **kwargs):
            seen.append(int(get_gdal_config("GDAL_CACHEMAX")))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine, "Accumulator", Recorded)
    before = get_gdal_config("GDAL_CACHEMAX")
    scene = tif(smooth_image(3, 120, 90))
    run = tiler.run_scene if parts is None else functools.partial(distributed.run, parts=parts)
    run(scene, tmp_path / "a.tif", model=tiny_model, strip_rows=32)
    run(scene, tmp_path / "b.tif", model=tiny_model, strip_rows=32, gdal_cache_mb=16)
    assert len(set(seen)) == 2 and seen[0] == 64 * 2**20 and seen[-1] == 16 * 2**20
    assert get_gdal_config("GDAL_CACHEMAX") == before
