"""Registration: known shifts and affines imposed on real bands are recovered.

Oracle: a band group's georeferencing is moved by a known amount (the pixels
are untouched, so nothing is resampled), and the correction tiler estimates
must put every group pixel back where the original georeferencing had it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject
from scipy import ndimage

from tests.conftest import SENTINEL2, SHARED, needs_shared, write_tif
from tiler.cli import main
from tiler.errors import RegistrationError
from tiler.registration import fit_affine, fit_translation, match_bands, register_scene
from tiler.scene import Band, BandGroup, open_scene

LANDSAT = SHARED / "landsat8_LC80200392015216"


def copy_band(src, dst, *, transform=None):
    """Copy a single-band raster, optionally with another transform (pixels unchanged)."""
    with rasterio.open(src) as ds:
        data, profile = ds.read(), ds.profile
    profile.update(driver="GTiff", tiled=True, blockxsize=256, blockysize=256)
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return str(dst)


def write_manifest(path, reference, groups, cloud_mask=None):
    lines = [f'reference = "{reference}"', ""]
    if cloud_mask is not None:
        lines += [f'cloud_mask = {{ file = "{cloud_mask[0]}", kind = "{cloud_mask[1]}" }}', ""]
    for name, g in groups.items():
        lines.append(f"[groups.{name}]")
        for k, v in g.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return str(path)


def correction_error(scene, group, true_transform):
    """Per-pixel error (pixels of the group) of the corrected placement of ``group``."""
    grid = scene.grid(group)
    cols, rows = np.meshgrid(np.linspace(0, grid.width, 12), np.linspace(0, grid.height, 12))
    errs = []
    to_ref = ~scene.transform
    for c, r in zip(cols.ravel(), rows.ravel()):
        placed = to_ref @ (grid.placement @ (c, r))
        corrected = scene.corrections[group] @ placed
        true = to_ref @ (true_transform @ (c, r))
        errs.append(np.subtract(corrected, true))
    ref_per_group = grid.pixel_size / scene.grid(scene.reference).pixel_size
    return np.asarray(errs) / ref_per_group


def rms(errors):
    return float(np.sqrt(np.mean(np.sum(np.concatenate(errors) ** 2, axis=1))))


def _sentinel_scene(tmp_path, transform=None, *, register=True):
    b8a = copy_band(SENTINEL2 / "s2_B8A.jp2", tmp_path / "b8a.tif", transform=transform)
    return write_manifest(tmp_path / "s2.toml", "10m", {
        "10m": {"files": [str(SENTINEL2 / "s2_B08.jp2"), str(SENTINEL2 / "s2_B04.jp2")], "bands": ["nir", "red"],
                "scale": 1e-4, "nodata": 0},
        "20m": {"files": [b8a], "bands": ["nir2"], "scale": 1e-4, "nodata": 0, "register": register},
    })


def _landsat_scene(tmp_path, transform=None):
    b3 = copy_band(LANDSAT / "l8_B3.tif", tmp_path / "b3.tif", transform=transform)
    b4 = copy_band(LANDSAT / "l8_B4.tif", tmp_path / "b4.tif", transform=transform)
    return write_manifest(tmp_path / "l8.toml", "pan", {
        "pan": {"files": [str(LANDSAT / "l8_B8.tif")], "bands": ["pan"], "scale": 2e-5, "offset": -0.1,
                "spectral_ranges": [[500, 680]]},
        "ms": {"files": [b3, b4], "bands": ["green", "red"], "scale": 2e-5, "offset": -0.1,
               "spectral_ranges": [[525, 600], [630, 680]]},
    }, cloud_mask=(LANDSAT / "l8_BQA.tif", "landsat_bqa_pre"))  # its cumulus show parallax: masked


def _recover(tmp_path, make, src, group, shifts, **kw):
    """Errors of the corrections for imposed shifts, less the product's own misalignment.

    The unshifted product's own estimate (a few hundredths of a pixel, see
    test_real_unshifted_data_reports_near_zero) is the baseline: what is
    tested is the recovery of the imposed, exactly known shift.
    """
    with rasterio.open(src) as ds:
        t = ds.transform
    with open_scene(make(tmp_path, t)) as sc:
        register_scene(sc, **kw).apply(sc)
        baseline = correction_error(sc, group, t)
    errors = []
    for dy, dx in shifts:
        moved = t @ Affine.translation(dx, dy)
        with open_scene(make(tmp_path, moved)) as sc:
            reg = register_scene(sc, **kw)
            g = reg.groups[group]
            assert g.status == "ok", g.reason
            errors.append(correction_error(sc, group, t) - baseline)
    return errors


@needs_shared(SENTINEL2)
def test_known_shifts_sentinel2_recovered(tmp_path):
    shifts = np.random.default_rng(0).uniform(-3, 3, (20, 2))
    errors = _recover(tmp_path, _sentinel_scene, SENTINEL2 / "s2_B8A.jp2", "20m", shifts)
    assert rms(errors) <= 0.1


@needs_shared(LANDSAT)
def test_known_shifts_landsat_pan_recovered(tmp_path):
    shifts = np.random.default_rng(1).uniform(-3, 3, (20, 2))
    errors = _recover(tmp_path, _landsat_scene, LANDSAT / "l8_B3.tif", "ms", shifts)
    assert rms(errors) <= 0.1


def _affine(t, width, height, *, degrees, scale, shift):
    cx, cy = width / 2, height / 2
    return t @ (Affine.translation(cx + shift[1], cy + shift[0]) @ Affine.rotation(degrees)
                @ Affine.scale(scale) @ Affine.translation(-cx, -cy))


@needs_shared(SENTINEL2)
@pytest.mark.parametrize("degrees, scale, shift", [(0.1, 1.001, (0.7, -1.2)), (-0.08, 0.9992, (-1.5, 0.4))])
def test_linearly_varying_shift_recovered_as_affine(tmp_path, degrees, scale, shift):
    with rasterio.open(SENTINEL2 / "s2_B8A.jp2") as ds:
        t, w, h = ds.transform, ds.width, ds.height
    moved = _affine(t, w, h, degrees=degrees, scale=scale, shift=shift)
    with open_scene(_sentinel_scene(tmp_path, moved)) as sc:
        imposed = correction_error(sc, "20m", t)  # before registration: the imposed misplacement
        assert np.ptp(imposed[:, 0]) > 0.5 or np.ptp(imposed[:, 1]) > 0.5  # it does vary across the scene
        g = register_scene(sc).groups["20m"]
        assert g.status == "ok" and g.model == "affine"
        assert rms([correction_error(sc, "20m", t)]) <= 0.2


@needs_shared(LANDSAT)
def test_landsat_affine_recovered(tmp_path):
    with rasterio.open(LANDSAT / "l8_B3.tif") as ds:
        t, w, h = ds.transform, ds.width, ds.height
    moved = _affine(t, w, h, degrees=0.12, scale=1.0008, shift=(1.1, 0.6))
    with open_scene(_landsat_scene(tmp_path, moved)) as sc:
        g = register_scene(sc, model="affine").groups["ms"]
        assert g.status == "ok"
        assert rms([correction_error(sc, "ms", t)]) <= 0.2


@needs_shared(SENTINEL2)
def test_real_unshifted_data_reports_near_zero(tmp_path):
    """The shared products are well co-registered: every group within 0.1 of its pixels."""
    for scene in (SENTINEL2, LANDSAT):
        with open_scene(scene) as sc:
            reg = register_scene(sc)
        for g in reg.groups.values():
            if g.status == "reference":
                continue
            assert g.status == "ok", (scene, g.group, g.reason)
            assert np.hypot(*g.shift_group_px) < 0.1, (scene, g.group, g.shift_group_px)
    # The Landsat scene's cumulus shows parallax between pan and MS bands: screened out.
    assert reg.groups["ms"].rejected.get("clouds (product mask)", 0) > 0


@needs_shared(SENTINEL2)
def test_correlation_never_worse_after_registration(tmp_path):
    """On every window the registration relies on, the corrected group matches better."""
    with rasterio.open(SENTINEL2 / "s2_B8A.jp2") as ds:
        t = ds.transform
    for dy, dx in [(1.3, -0.6), (-0.2, 0.15), (2.7, 2.1)]:
        with open_scene(_sentinel_scene(tmp_path, t @ Affine.translation(dx, dy))) as sc:
            reg = register_scene(sc)
            reg.apply(sc)
            used = [w for w in reg.groups["20m"].windows if w.reason is None]
            assert len(used) >= 20
            for w in used:
                # The 128 x 128 window of 20 m pixels around the window's centre.
                k = sc.transform @ Affine.translation(int(w.col) - 128, int(w.row) - 128) @ Affine.scale(2)
                ref, _ = sc.warp("10m", k, (128, 128), positions=[0], resampling="average")
                before, _ = sc.warp("20m", k, (128, 128), corrected=False)
                after, _ = sc.warp("20m", k, (128, 128), corrected=True)
                ok = np.isfinite(before[0]) & np.isfinite(after[0]) & np.isfinite(ref[0])
                c_before = np.corrcoef(ref[0][ok], before[0][ok])[0, 1]
                c_after = np.corrcoef(ref[0][ok], after[0][ok])[0, 1]
                assert c_after >= c_before - 1e-4, (dy, dx, w.row, w.col, c_before, c_after)


@needs_shared(SENTINEL2)
@pytest.mark.parametrize("resampling", ["bilinear", "cubic"])
def test_registered_window_equals_whole_scene_warp(tmp_path, resampling):
    with rasterio.open(SENTINEL2 / "s2_B8A.jp2") as ds:
        t = ds.transform
        full = ds.read(1).astype(np.float32)
    path = _sentinel_scene(tmp_path, _affine(t, 967, 973, degrees=0.05, scale=1.0003, shift=(0.8, -0.4)))
    text = Path(path).read_text().replace("register = true", f'register = true\nresampling = "{resampling}"')
    Path(path).write_text(text)
    with open_scene(path) as sc:
        register_scene(sc).apply(sc)
        whole = np.full((sc.height, sc.width), np.nan, np.float32)
        reproject(full, whole, src_transform=sc.source_transform("20m"), src_crs=sc.crs,
                  dst_transform=sc.transform, dst_crs=sc.crs, resampling=Resampling[resampling],
                  src_nodata=0, dst_nodata=np.nan)
        whole *= np.float32(1e-4)
        for rows, cols in [((0, 300), (0, 257)), ((700, 1212), (900, 1933)), ((1800, 1947), (13, 600))]:
            data, valid = sc.read(rows, cols, [3])
            expect = whole[rows[0]:rows[1], cols[0]:cols[1]]
            both = valid & np.isfinite(expect)
            assert both.mean() > 0.95
            np.testing.assert_allclose(data[0][both], expect[both], rtol=1e-4, atol=1e-7)


@needs_shared(SENTINEL2)
def test_registration_off_and_skipped_groups(tmp_path):
    with open_scene(_sentinel_scene(tmp_path, register=False)) as sc:
        reg = register_scene(sc)
    assert reg.groups["20m"].status == "skipped"


def _write_plain(path, array):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return write_tif(path, array, crs=None, transform=Affine.identity())


def _texture(size, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((size, size)), 4) * 4000 + 1000


def _block_mean(a, k):
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).mean(axis=(1, 3))


def test_worldview3_layout_chains_swir_through_multispectral(tmp_path):
    """P/M/A files without georeferencing: placed by extent, M shifted, A chained via M."""
    tex = _texture(1536)
    shift = (0.6, -1.3)  # M pixels (row, col)
    moved = ndimage.shift(tex, (shift[0] * 4, shift[1] * 4), order=3, mode="reflect")
    m = np.stack([_block_mean(moved, 4) * (1 + 0.05 * k) for k in range(8)]).astype(np.uint16)
    a = np.stack([_block_mean(tex, 8) * (1 - 0.03 * k) for k in range(8)]).astype(np.uint16)
    _write_plain(tmp_path / "6010_P.tif", tex[None].astype(np.uint16))
    _write_plain(tmp_path / "6010_M.tif", m)
    _write_plain(tmp_path / "6010_A.tif", a)
    with open_scene(tmp_path) as sc:
        assert sc.kind == "worldview3" and sc.reference == "P"
        assert sc.grid("M").placed_by == "extent"
        reg = register_scene(sc)
    gm, ga = reg.groups["M"], reg.groups["A"]
    assert gm.status == ga.status == "ok"
    assert gm.match.endswith("~ pan") or gm.match.startswith("mean")
    assert ga.anchor == "M"
    # The content of M sits `shift` M pixels off: the estimate says so.
    np.testing.assert_allclose(gm.shift_group_px, shift, atol=0.1)
    np.testing.assert_allclose(ga.shift_group_px, (0.0, 0.0), atol=0.1)


def test_failed_registration_is_explicit_and_stops_apply(tmp_path):
    flat = np.full((1, 300, 300), 500, np.uint16)
    tex = _texture(600)[None].astype(np.uint16)
    ref = write_tif(tmp_path / "ref.tif", tex, transform=Affine(10, 0, 0, 0, -10, 6000))
    grp = write_tif(tmp_path / "flat.tif", flat, transform=Affine(20, 0, 0, 0, -20, 6000))
    path = write_manifest(tmp_path / "s.toml", "ref", {
        "ref": {"files": [ref], "bands": ["red"]}, "flat": {"files": [grp], "bands": ["nir"]}})
    with open_scene(path) as sc:
        reg = register_scene(sc)
        g = reg.groups["flat"]
        assert g.status == "failed" and "flat texture" in g.reason
        with pytest.raises(RegistrationError, match="--registration off"):
            reg.apply(sc)
    result = CliRunner().invoke(main, ["register", path, "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert "flat texture" in result.output
    assert not (tmp_path / "r.json").exists()  # issue 21.12: nothing is left on exit 2


def test_a_grid_too_small_names_its_group_once(tmp_path):
    """Issue 21.14: the error said "group '60m': group '60m': ..."."""
    ref = write_tif(tmp_path / "ref.tif", _texture(200)[None].astype(np.uint16),
                    transform=Affine(10, 0, 0, 0, -10, 2000))
    small = write_tif(tmp_path / "s.tif", _texture(12)[None].astype(np.uint16),
                      transform=Affine(2000 / 12, 0, 0, 0, -2000 / 12, 2000))
    path = write_manifest(tmp_path / "s.toml", "ref", {
        "ref": {"files": [ref], "bands": ["red"]}, "tiny": {"files": [small], "bands": ["nir"]}})
    result = CliRunner().invoke(main, ["register", path])
    assert result.exit_code == 2, result.output
    error = [ln for ln in result.output.splitlines() if ln.startswith("Error:")][0]
    assert error.count("'tiny'") == 1 and "too small" in error, error


def test_match_bands_spectral():
    def group(name, *names):
        return BandGroup(name, tuple(Band(n, "x.tif", i) for i, n in enumerate(names, start=1)))
    pan = group("P", "pan")
    ms = group("M", "coastal", "blue", "green", "red", "nir")
    m = match_bands(ms, pan)
    assert m.anchor_positions == (0,) and set(m.group_positions) == {1, 2, 3}
    s2 = match_bands(group("20m", "rededge1", "nir2", "swir1"), group("10m", "blue", "green", "red", "nir"))
    assert s2.describe(group("20m", "rededge1", "nir2", "swir1"), group("10m", "blue", "green", "red", "nir")) \
        == "nir2 ~ nir"


def test_robust_fits_reject_outliers():
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 1000, (30, 2))
    true = np.array([0.4, -1.1]) + centres @ np.array([[2e-4, -1e-4], [3e-4, 1e-4]])
    disp = true + rng.normal(0, 0.02, true.shape)
    disp[:4] += 5.0  # clouds
    aff = fit_affine(centres, disp, floor=0.25)
    assert not aff.inliers[:4].any() and aff.inliers[4:].all()
    np.testing.assert_allclose(aff.predict(centres[:, 0], centres[:, 1])[4:], true[4:], atol=0.03)
    clouds = (np.arange(30) < 5)[:, None] * 3.0
    tr = fit_translation(centres, np.array([0.4, -1.1]) + rng.normal(0, 0.02, (30, 2)) + clouds, floor=0.25)
    np.testing.assert_allclose(tr.params[:, 0], [0.4, -1.1], atol=0.02)
