"""Registration on data it was not tuned on (issue 12): a very-high-resolution pan/MS pair,
undeclared zero fill, small Sentinel-2 patches, product cloud masks, a stable model choice.

Oracles: shifts imposed through the georeferencing (pixels untouched), and an
independent least-squares estimate of the real pan/MS misalignment written here:
the pan band area-averaged onto the MS grid (2 x 2 block means), the MS bands
combined by linear regression onto it, and a brute-force search of the sum of
squared differences over sub-pixel shifts (cubic-spline resampling, gain and
bias fitted per shift).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import rasterio
from affine import Affine
from click.testing import CliRunner
from scipy import ndimage

from tests.conftest import SENTINEL2, SHARED, needs_shared, write_tif
from tests.scenes import VHR, s2_patch, vhr_scene
from tiler.cli import main
from tiler.registration import register_scene, select_model, window_layout
from tiler.scene import open_scene

LANDSAT = SHARED / "landsat8_LC80200392015216"


def _ssd_oracle(cols=slice(None)):
    """Independent estimate of the MS content's offset from the pan's, MS pixels (row, col)."""
    with rasterio.open(VHR / "pan1.tif") as ds:
        pan = ds.read(1).astype(float)
    with rasterio.open(VHR / "ms1.tif") as ds:
        ms = ds.read().astype(float)
    pan = pan.reshape(300, 2, 300, 2).mean(axis=(1, 3))[:, cols]
    ms = ms[:, :, cols]
    design = np.concatenate([ms.reshape(4, -1).T, np.ones((ms[0].size, 1))], axis=1)
    weights, *_ = np.linalg.lstsq(design, pan.ravel(), rcond=None)
    synthetic = (design @ weights).reshape(pan.shape)
    m = 6

    def ssd(d):
        moved = ndimage.shift(synthetic, (-d[0], -d[1]), order=3, mode="nearest")[m:-m, m:-m].ravel()
        a = np.stack([moved, np.ones_like(moved)], axis=1)
        y = pan[m:-m, m:-m].ravel()
        return float(np.sum((y - a @ np.linalg.lstsq(a, y, rcond=None)[0]) ** 2))

    best = np.zeros(2)
    for step, reach in ((0.1, 1.5), (0.02, 0.12)):
        grid = [best + (dy, dx) for dy in np.arange(-reach, reach + 1e-9, step)
                for dx in np.arange(-reach, reach + 1e-9, step)]
        best = min(grid, key=ssd)
    return best


def _recover_vhr(tmp_path, shifts, zero_cols=0):
    with open_scene(vhr_scene(tmp_path / "base", zero_cols=zero_cols)) as sc:
        base = register_scene(sc).groups["ms"]
    assert base.status == "ok", base.reason
    errors, models = [], []
    for k, (dy, dx) in enumerate(shifts):
        with open_scene(vhr_scene(tmp_path / f"s{k}", (dy, dx), zero_cols)) as sc:
            g = register_scene(sc).groups["ms"]
        assert g.status == "ok", (dy, dx, g.reason)  # no run fails
        models.append(g.model)
        errors.append(np.subtract(g.shift_group_px, base.shift_group_px) - (dy, dx))
    return base, np.asarray(errors), models


@needs_shared(VHR)
def test_vhr_pair_known_shifts_recovered_and_always_a_translation(tmp_path):
    shifts = np.random.default_rng(12).uniform(-2, 2, (20, 2))
    base, errors, models = _recover_vhr(tmp_path, shifts)
    assert np.sqrt(np.mean(np.sum(errors**2, axis=1))) <= 0.1
    assert models == ["translation"] * 20
    assert base.model == "translation" and base.model_reason.startswith("translation:")
    # The product's own misalignment agrees with the independent least-squares estimate.
    assert np.hypot(*(np.asarray(base.shift_group_px) - _ssd_oracle())) <= 0.1, (base.shift_group_px, _ssd_oracle())
    # Every window estimate carries its uncertainty; the fit reports its own.
    used = [w for w in base.windows if w.reason is None]
    assert used and all(0 < s < 0.5 for w in used for s in w.sigma)
    assert all(0 < s < 0.1 for s in base.shift_sigma_group_px)


@needs_shared(VHR)
def test_vhr_pair_with_undeclared_zero_fill(tmp_path):
    """30 % of the pair zeroed, not declared nodata: noted, masked, same accuracy."""
    shifts = np.random.default_rng(13).uniform(-2, 2, (8, 2))
    base, errors, models = _recover_vhr(tmp_path, shifts, zero_cols=90)
    assert np.sqrt(np.mean(np.sum(errors**2, axis=1))) <= 0.1
    assert set(models) == {"translation"}
    assert any("not declared nodata" in n for n in base.notes), base.notes
    # Not a confident zero: the real misalignment of the part that is left.
    oracle = _ssd_oracle(cols=slice(96, None))
    assert np.hypot(*(np.asarray(base.shift_group_px) - oracle)) <= 0.1, (base.shift_group_px, oracle)


@needs_shared(SENTINEL2)
def test_small_sentinel2_patch_shifts_recovered(tmp_path):
    with open_scene(s2_patch(tmp_path / "base")) as sc:
        assert (sc.grid("10m").width, sc.grid("20m").width, sc.grid("60m").width) == (120, 60, 20)
        reg = register_scene(sc)
    base, tiny = reg.groups["20m"], reg.groups["60m"]
    assert base.status == "ok", base.reason
    # The 60 m group is 20 px: too small, and the message says so and names the way out.
    assert tiny.status == "failed" and "too small to register" in tiny.reason and "--registration off" in tiny.reason
    assert base.window_size <= 30 and base.window_grid[0] >= 3
    errors = []
    for k, shift in enumerate(np.random.default_rng(14).uniform(-1.5, 1.5, (10, 2))):
        with open_scene(s2_patch(tmp_path / f"s{k}", shift)) as sc:
            g = register_scene(sc, groups=["20m"]).groups["20m"]
        assert g.status == "ok", g.reason
        assert not any(r.startswith("clouds") for r in g.rejected), g.rejected  # a clear patch
        errors.append(np.subtract(g.shift_group_px, base.shift_group_px) - shift)
    assert np.sqrt(np.mean(np.sum(np.square(errors), axis=1))) <= 0.1


@needs_shared(SENTINEL2)
def test_tiler_indices_registers_a_small_patch_with_the_shared_options(tmp_path):
    folder = s2_patch(tmp_path / "patch")
    out = tmp_path / "ndwi.tif"
    result = CliRunner().invoke(main, ["indices", str(folder), "-o", str(out), "--index", "ndvi", "--index", "ndre",
                                       "--registration-window", "24", "--registration-grid", "4",
                                       "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    g = report["registration"]["groups"]["20m"]
    assert g["status"] == "ok" and g["window_size"] == 24 and g["window_grid"] == [4, 4]
    with rasterio.open(out) as ds:
        assert ds.count == 2 and np.isfinite(ds.read(2)).mean() > 0.9


def test_window_layout_fits_the_scene_and_counts_add_up(tmp_path):
    layout, note = window_layout(300, 300, window=128, grid=8)
    assert layout.size <= 150 and layout.shape == (4, 4) and "120 px" in note
    for h, w in [(300, 300), (60, 60), (161, 400), (966, 973), (40, 33)]:
        layout, _ = window_layout(h, w, window=128, grid=8)
        assert layout.size <= min(h, w) // 2 and layout.size >= 16
        rows = sorted({r for r, _ in layout.origins})
        assert rows[0] == 0 and rows[-1] + layout.size == h  # spread edge to edge
        assert all(b - a >= layout.size // 2 for a, b in zip(rows, rows[1:]))  # overlap <= 50 %
    assert window_layout(31, 200, window=128, grid=8)[0] is None
    # A scene where too few windows survive says how many of how many, and why.
    flat = np.full((1, 64, 64), 500, np.uint16)
    tex = (ndimage.gaussian_filter(np.random.default_rng(0).random((128, 128)), 3) * 4000 + 1000)[None]
    manifest = tmp_path / "s.toml"
    write_tif(tmp_path / "ref.tif", tex.astype(np.uint16), transform=Affine(10, 0, 0, 0, -10, 1280))
    write_tif(tmp_path / "flat.tif", flat, transform=Affine(20, 0, 0, 0, -20, 1280))
    manifest.write_text('reference = "ref"\n[groups.ref]\nfiles = ["ref.tif"]\nbands = ["red"]\n'
                        '[groups.flat]\nfiles = ["flat.tif"]\nbands = ["nir"]\n')
    with open_scene(manifest) as sc:
        g = register_scene(sc).groups["flat"]
    n = g.window_grid[0] * g.window_grid[1]
    assert g.status == "failed" and g.reason.startswith(f"0 of {n} windows usable; rejected: {n} flat texture")


@needs_shared(LANDSAT)
def test_product_cloud_mask_is_used(tmp_path):
    """The Landsat folder's BQA marks its cumulus: those windows go, named by the mask; a manifest names it too."""
    with open_scene(LANDSAT) as sc:
        assert sc.cloud_mask is not None and sc.cloud_mask.kind == "landsat_bqa_pre"
        g = register_scene(sc).groups["ms"]
    assert g.status == "ok" and g.cloud_screen == "product mask (landsat_bqa_pre)"
    assert g.rejected.get("clouds (product mask)", 0) > 0
    # The rejected windows are the ones the mask covers (> 2 %), checked against the raw BQA bits here.
    with rasterio.open(LANDSAT / "l8_BQA.tif") as ds:
        bqa, t = ds.read(1), ds.transform
    # Pre-collection BQA (Landsat 8 Data Users Handbook v1.0, table 3-3): bits 14-15 cloud
    # confidence (2 maybe, 3 yes), bits 12-13 cirrus confidence (3 yes).
    cloudy = (((bqa >> 14) & 3) >= 2) | (((bqa >> 12) & 3) == 3)
    with open_scene(LANDSAT) as sc:
        ref_t = sc.transform
    for w in g.windows:
        x, y = ref_t @ (w.col, w.row)
        c, r = ~t @ (x, y)
        half = g.window_size // 2
        frac = cloudy[max(0, int(r) - half):int(r) + half, max(0, int(c) - half):int(c) + half].mean()
        if w.reason == "clouds (product mask)":
            assert frac > 0.01, (w.row, w.col, frac)
        elif w.reason is None:
            assert frac < 0.05, (w.row, w.col, frac)


@needs_shared(SENTINEL2)
def test_sentinel2_scl_in_the_folder_screens_clouds(tmp_path):
    folder = s2_patch(tmp_path / "p", size=240)
    with rasterio.open(folder / "s2_B8A.tif") as ds:
        profile = ds.profile
    scl = np.full((1, 120, 120), 4, np.uint8)  # vegetation
    scl[:, :, :40] = 9  # "cloud high probability" over the west third (a clear patch: the mask is obeyed)
    profile.update(dtype="uint8", count=1, nodata=None)
    with rasterio.open(folder / "T18SVG_SCL_20m.tif", "w", **profile) as out:
        out.write(scl)
    with open_scene(folder) as sc:
        assert sc.cloud_mask.kind == "s2_scl"
        g = register_scene(sc, groups=["20m"]).groups["20m"]
    assert g.status == "ok"
    for w in g.windows:
        west = w.col / 2 < 40 + g.window_size / 2  # the window (20 m px) reaches into the masked third
        assert (w.reason == "clouds (product mask)") == west, (w.col, w.reason)


def test_model_choice_is_stable_and_explained():
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 2000, (40, 2))
    sigma = rng.uniform(0.02, 0.08, 40)
    cov = np.array([np.eye(2) * s**2 for s in sigma])
    noise = rng.normal(0, 1, (40, 2)) * sigma[:, None]
    # A pure translation: never affine, whatever the shift, and the reason says why.
    for shift in rng.uniform(-2, 2, (10, 2)):
        choice, _ = select_model(centres, shift + noise, cov, floor=0.1, model="auto")
        assert choice.fit.kind == "translation", choice.reason
        assert choice.reason.startswith("translation: ")
    # A field that varies by a pixel across the scene: affine, with its F-test in the reason.
    field = np.array([0.3, -0.2]) + centres @ np.array([[4e-4, -2e-4], [1e-4, 3e-4]])
    choice, _ = select_model(centres, field + noise, cov, floor=0.1, model="auto")
    assert choice.fit.kind == "affine" and "F(4, " in choice.reason and choice.p_value < 1e-3
    # Deterministic: the same input gives the same answer.
    again, _ = select_model(centres, field + noise, cov, floor=0.1, model="auto")
    np.testing.assert_array_equal(again.fit.params, choice.fit.params)


def test_no_ransac_warning_leaks():
    """Windows no affine explains: skimage's "No inliers found" is caught, not printed."""
    centres = np.array([[0, 0], [0, 100], [100, 0], [100, 100], [50, 50]], float)
    disp = np.array([[0, 0], [5, -3], [-4, 6], [7, 7], [-6, 2]], float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choice, failure = select_model(centres, disp, np.array([np.eye(2) * 1e-4] * 5), floor=0.01, model="affine")
    assert choice is None and "agreeing windows" in failure
