"""Spectral indices: against the Awesome Spectral Indices reference (spyndex), hand
values from the literature, edge cases, the channel plan and `tiler indices`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from tests.conftest import SENTINEL2, SHARED, needs_shared, write_tif
from tests.reference import build_tiny_unet, np_index
from tiler import predict
from tiler.cli import main
from tiler.errors import BandMismatchError
from tiler.indices import DENOMINATOR_EPSILON, INDICES, ChannelPlan, compute_index
from tiler.model import load_model
from tiler.scene import open_scene

LANDSAT = SHARED / "landsat8_LC80200392015216"
#: Awesome Spectral Indices names and band symbols for tiler's indices.
SPYNDEX = {"ndvi": "NDVI", "ndwi": "NDWI", "ndmi": "NDMI", "mndwi": "MNDWI", "savi": "SAVI", "evi": "EVI",
           "ndre": "NDREI", "ndbi": "NDBI"}
SYMBOLS = {"nir": "N", "red": "R", "green": "G", "blue": "B", "swir1": "S1", "rededge1": "RE1"}


def _spyndex(name, bands, **params):
    spyndex = pytest.importorskip("spyndex")
    if name == "ccci":  # not in the catalogue: the ratio of its NDREI and NDVI
        with np.errstate(divide="ignore", invalid="ignore"):
            return _spyndex("ndre", bands) / _spyndex("ndvi", bands)
    idx = spyndex.indices[SPYNDEX[name]]
    values = {SYMBOLS[k]: v.astype(np.float64) for k, v in bands.items() if k in SYMBOLS}
    constants = {"L": 0.5, "g": 2.5, "C1": 6.0, "C2": 7.5}
    if name == "evi":
        constants["L"] = 1.0
    values.update({k: params.get(k, constants[k]) for k in idx.bands if k in constants})
    return np.asarray(spyndex.computeIndex(SPYNDEX[name], params=values), np.float64)


def _check_against_spyndex(scene_path, names):
    with open_scene(scene_path) as sc:
        plan = ChannelPlan.for_scene(sc, sorted({b for n in names for b in INDICES[n].bands}))
        data, valid = sc.read((200, 712), (300, 812), plan.indexes)
    bands = dict(zip(plan.channels, data))
    for name in names:
        ours = compute_index(name, *(bands[b] for b in INDICES[name].bands), valid=valid)
        ref = _spyndex(name, bands)
        if INDICES[name].bounds is not None:
            ref = np.clip(ref, *INDICES[name].bounds)
        ok = np.isfinite(ours)
        assert ok.mean() > 0.99, name
        # 1e-5 absolute; CCCI reaches |values| of some hundreds where NDVI is near 0, where
        # float32 itself rounds by more, so one float32 rounding step is allowed on top.
        np.testing.assert_allclose(ours[ok], ref[ok], rtol=np.finfo(np.float32).eps, atol=1e-5, err_msg=name)


@needs_shared(SENTINEL2)
def test_every_index_matches_spyndex_on_sentinel2():
    _check_against_spyndex(SENTINEL2, list(INDICES))


@needs_shared(LANDSAT)
def test_indices_match_spyndex_on_landsat8():
    _check_against_spyndex(LANDSAT, ["ndvi", "ndwi", "ndmi", "mndwi", "savi", "evi", "ndbi"])


@pytest.mark.parametrize("name, bands, expect", [
    ("ndvi", {"nir": 0.5, "red": 0.1}, 0.4 / 0.6),
    ("ndwi", {"green": 0.2, "nir": 0.5}, -0.3 / 0.7),
    ("ndmi", {"nir": 0.5, "swir1": 0.3}, 0.25),
    ("mndwi", {"green": 0.2, "swir1": 0.3}, -0.2),
    ("savi", {"nir": 0.5, "red": 0.1}, 1.5 * 0.4 / 1.1),
    ("evi", {"nir": 0.5, "red": 0.1, "blue": 0.05}, 2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1.0)),
    ("ndre", {"nir": 0.5, "rededge1": 0.3}, 0.25),
    ("ccci", {"nir": 0.5, "rededge1": 0.3, "red": 0.1}, 0.25 / (0.4 / 0.6)),
    ("ndbi", {"swir1": 0.3, "nir": 0.5}, -0.25),
])
def test_hand_computed_values(name, bands, expect):
    arrays = [np.full((2, 3), bands[b], np.float32) for b in INDICES[name].bands]
    out = compute_index(name, *arrays)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expect, rtol=1e-6)


def test_parameters_are_keyword_arguments():
    n, r = np.full((1, 1), 0.5, np.float32), np.full((1, 1), 0.1, np.float32)
    assert compute_index("savi", n, r, L=0.0)[0, 0] == pytest.approx(0.4 / 0.6, rel=1e-6)
    assert compute_index("savi", n, r, L=1.0)[0, 0] == pytest.approx(2 * 0.4 / 1.6, rel=1e-6)
    with pytest.raises(ValueError, match="no parameter"):
        compute_index("ndvi", n, r, L=1.0)


def test_zero_denominator_nodata_and_negative_reflectance():
    nir = np.array([[0.0, 0.3, -0.01, -0.02, 0.5]], np.float32)
    red = np.array([[0.0, 0.1, 0.02, 0.02, np.nan]], np.float32)
    valid = np.array([[True, False, True, True, True]])
    out = compute_index("ndvi", nir, red, valid=valid)
    assert np.isnan(out[0, 0])  # 0 / 0: nodata, not 0 and not a warning
    assert np.isnan(out[0, 1])  # nodata input
    assert out[0, 2] == -1.0  # (-0.03) / (0.01) = -3: NDVI is bounded, clipped to -1
    assert np.isnan(out[0, 3])  # denominator exactly 0 with negative reflectance
    assert np.isnan(out[0, 4])  # non-finite input
    assert not np.isinf(out).any()
    # A near-zero denominator (within the epsilon) is nodata too; EVI is unbounded, not clipped.
    evi = compute_index("evi", np.float32([[0.5, 0.5]]), np.float32([[0.0, 0.0]]),
                        np.float32([[0.2, 0.2 + DENOMINATOR_EPSILON * 10]]))
    assert np.isnan(evi[0, 0]) and abs(evi[0, 1]) > 1e4
    np.testing.assert_array_equal(np.isnan(out), np.isnan(np_index("ndvi", {"nir": nir, "red": red}, valid)))


@pytest.mark.parametrize("name", list(INDICES))
def test_kernels_equal_numpy_twin(name):
    rng = np.random.default_rng(7)
    bands = {b: rng.uniform(-0.05, 0.6, (37, 53)).astype(np.float32) for b in INDICES[name].bands}
    bands[INDICES[name].bands[0]][3, :5] = 0.0
    valid = rng.random((37, 53)) > 0.1
    ours = compute_index(name, *(bands[b] for b in INDICES[name].bands), valid=valid)
    twin = np_index(name, bands, valid)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(twin))
    np.testing.assert_allclose(ours, twin, rtol=2e-6, atol=1e-6)


def _sentinel_like(tmp_path, *, baseline_offset=False):
    """A 10 m green/red/nir group with a saturated pixel, in a manifest with S2 scaling."""
    rng = np.random.default_rng(0)
    green = rng.integers(500, 3000, (1, 64, 64)).astype(np.uint16)
    red = rng.integers(500, 3000, (1, 64, 64)).astype(np.uint16)
    nir = rng.integers(2000, 5000, (1, 64, 64)).astype(np.uint16)
    nir[0, 10, 10] = 65535  # saturated
    nir[0, 20, 20] = 0  # nodata
    green[0, 30, 30], nir[0, 30, 30] = 1200, 900  # dark water: negative reflectance with the -1000 offset
    t = Affine(10, 0, 400000, 0, -10, 5000000)
    for name, a in (("g", green), ("r", red), ("n", nir)):
        write_tif(tmp_path / f"{name}.tif", a, transform=t)
    offset = -0.1 if baseline_offset else 0.0
    (tmp_path / "s.toml").write_text(
        f'[groups.10m]\nfiles = ["g.tif", "r.tif", "n.tif"]\nbands = ["green", "red", "nir"]\n'
        f'scale = 0.0001\noffset = {offset}\nnodata = 0\nsaturation = 65535\n')
    return str(tmp_path / "s.toml"), green[0], nir[0]


def test_saturation_nodata_and_negative_reflectance_through_a_scene(tmp_path):
    path, green, nir = _sentinel_like(tmp_path, baseline_offset=True)
    with open_scene(path) as sc:
        plan = ChannelPlan.for_scene(sc, ["nir", "ndwi"])
        data, valid = sc.read((0, 64), (0, 64), plan.indexes)
        out = plan.build(data, valid)
    assert np.isnan(out[1, 10, 10])  # saturated NIR
    assert not np.isnan(out[0, 10, 10])  # the band channel itself is kept
    assert np.isnan(out[1, 20, 20]) and not valid[20, 20]  # nodata
    g, n = (1200 - 1000) / 1e4, (900 - 1000) / 1e4  # 0.02 and -0.01
    assert out[1, 30, 30] == 1.0 and (g - n) / (g + n) > 1  # NDWI of 3 is clipped to its bound
    ok = valid.copy()
    ok[10, 10] = False
    expect = np_index("ndwi", {"green": green * 1e-4 - 0.1, "nir": nir * 1e-4 - 0.1}, ok)
    np.testing.assert_allclose(out[1], expect, rtol=1e-5, atol=1e-6)


def test_missing_channel_lists_what_the_scene_has(tmp_path):
    path, _, _ = _sentinel_like(tmp_path)
    with open_scene(path) as sc, pytest.raises(BandMismatchError, match=r"evi \(needs blue\).*can compute ndvi, ndwi"):
        ChannelPlan.for_scene(sc, ["red", "evi"])


def test_run_builds_index_channels_like_predict(tmp_path):
    path, _, _ = _sentinel_like(tmp_path)
    model = build_tiny_unet(tmp_path / "m.keras", channels=("red", "nir", "ndvi", "ndwi"), patch_size=32)
    out = tmp_path / "p.tif"
    result = CliRunner().invoke(main, ["run", path, "-o", str(out), "--model", model, "--output", "probability",
                                       "-q"])
    assert result.exit_code == 0, result.output
    with open_scene(path) as sc:
        plan = ChannelPlan.for_scene(sc, ["red", "nir", "ndvi", "ndwi"])
        data, valid = sc.read((0, 64), (0, 64), plan.indexes)
        image = plan.build(data, valid)
    with rasterio.open(out) as ds:
        got = ds.read()
    # An undefined index value (the saturated pixel) is fed as the channel's mean, the model's offset.
    offset = np.asarray(load_model(model).info.offset, np.float32)[:, None, None]
    image = np.where(np.isnan(image), offset, image)
    expect = predict(image, model=model, valid=valid)
    np.testing.assert_allclose(got[:, valid], expect[:, valid], atol=1e-5)
    assert np.isnan(got[:, ~valid]).all()


@needs_shared(SENTINEL2)
def test_tiler_indices_on_the_shared_sentinel2_scene(tmp_path):
    out, report = tmp_path / "idx.tif", tmp_path / "idx.json"
    result = CliRunner().invoke(main, ["indices", str(SENTINEL2), "--index", "ndwi", "--index", "ndvi", "--index",
                                       "ndmi", "-o", str(out), "--report", str(report), "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("ndwi", "ndvi", "ndmi") and ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.crs.to_epsg() == 32618 and ds.transform.a == 10.0
        tags = ds.tags()
        radiometry = json.loads(tags["TILER_RADIOMETRY"])
        assert radiometry["bands"]["nir"]["scale"] == pytest.approx(1e-4)
        ndwi, ndvi = ds.read(1), ds.read(2)
    # The Atlantic in the east of the scene is water; the fields and woods in the west are green.
    for rows, cols in [((1200, 1456), (1500, 1756)), ((1600, 1856), (1650, 1900)), ((300, 556), (1700, 1900))]:
        w = ndwi[slice(*rows), slice(*cols)]
        assert (w > 0).mean() > 0.95, (rows, cols)
    for rows, cols in [((0, 256), (0, 256)), ((1024, 1152), (512, 640)), ((256, 384), (768, 896))]:
        assert np.nanmedian(ndvi[slice(*rows), slice(*cols)]) > 0.3, (rows, cols)
    rep = json.loads(report.read_text())
    assert rep["registration"]["groups"]["20m"]["status"] == "ok"  # NDMI reads the 20 m SWIR band


def test_tiler_indices_bad_input_exit_2(tmp_path):
    path, _, _ = _sentinel_like(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(main, ["indices", path, "--index", "nope", "-o", str(tmp_path / "x.tif")])
    assert bad.exit_code == 2 and "known: ndvi" in bad.output
    missing = runner.invoke(main, ["indices", path, "--index", "evi", "-o", str(tmp_path / "x.tif")])
    assert missing.exit_code == 2 and "needs blue" in missing.output
    param = runner.invoke(main, ["indices", path, "--index", "ndvi", "--param", "ndvi.L=1", "-o",
                                 str(tmp_path / "x.tif")])
    assert param.exit_code == 2 and "no parameter" in param.output
    assert not (tmp_path / "x.tif").exists()


def test_indices_with_additive_constants_are_refused_on_digital_numbers(tmp_path):
    """Issue 21.4: EVI on 11-bit counts was -5278..8848 with exit 0."""
    from tests.conftest import write_tif

    rng = np.random.default_rng(1)
    counts = rng.integers(100, 2047, (4, 40, 40)).astype(np.uint16)
    raw = write_tif(tmp_path / "dn.tif", counts, descriptions=("blue", "green", "red", "nir"),
                    photometric="minisblack")
    runner = CliRunner()
    for index in ("evi", "savi"):
        r = runner.invoke(main, ["indices", raw, "--index", index, "-o", str(tmp_path / f"{index}.tif")])
        assert r.exit_code == 2, r.output
        assert "surface reflectance" in r.output and "scale" in r.output and "uint16" in r.output
        assert not (tmp_path / f"{index}.tif").exists()
    # A normalised difference is scale-invariant: computed, with a note that says so.
    r = runner.invoke(main, ["indices", raw, "--index", "ndvi", "-o", str(tmp_path / "ndvi.tif")])
    assert r.exit_code == 0, r.output
    assert "unscaled digital numbers" in r.output
    # With a radiometric scale in a manifest, EVI is computed and matches the formula on reflectance.
    (tmp_path / "s.toml").write_text('[groups.ms]\nfiles = ["dn.tif"]\nbands = ["blue", "green", "red", "nir"]\n'
                                     'scale = 0.0001\n')
    r = runner.invoke(main, ["indices", str(tmp_path / "s.toml"), "--index", "evi", "-o", str(tmp_path / "e.tif")])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "e.tif") as ds:
        evi = ds.read(1)
    b, _, red, nir = (counts.astype(np.float64) * 1e-4)
    expect = 2.5 * (nir - red) / (nir + 6 * red - 7.5 * b + 1)
    np.testing.assert_allclose(evi, expect, rtol=1e-4, atol=1e-5)
