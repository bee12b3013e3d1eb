"""Patch-grid arithmetic, against brute-force oracles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import covering_patches, reflect_pad_oracle
from tiler.errors import PlanError
from tiler.plan import Axis, PatchGrid, reflect_indices, stride_from_overlap, take_runs


@pytest.mark.parametrize("patch,overlap,stride", [(256, 0.5, 128), (256, 0.0, 256), (256, 0.25, 192),
                                                  (64, 0.75, 16), (100, 0.33, 67)])
def test_stride_from_overlap(patch, overlap, stride):
    assert stride_from_overlap(patch, overlap) == stride


@pytest.mark.parametrize("overlap", [1.0, -0.1, 1.5, float("nan")])
def test_overlap_outside_unit_interval_is_refused(overlap):
    with pytest.raises(PlanError, match=r"overlap must be a fraction in \[0, 1\)"):
        stride_from_overlap(256, overlap)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), r0=st.integers(-70, 30), rn=st.integers(0, 90),
       c0=st.integers(-70, 30), cn=st.integers(0, 90), seed=st.integers(0, 2**16))
def test_take_runs_equals_numpy_fancy_indexing(h, w, r0, rn, c0, cn, seed):
    """A reflect-padded window (and any index lists) taken run by run equals NumPy's gather."""
    rng = np.random.default_rng(seed)
    a = rng.random((2, h, w)).astype(np.float32)
    rows, cols = reflect_indices(r0, r0 + rn, h), reflect_indices(c0, c0 + cn, w)
    np.testing.assert_array_equal(take_runs(a, rows, cols), a[:, rows][:, :, cols])
    mask = a[0] > 0.5
    np.testing.assert_array_equal(take_runs(mask, rows, cols), mask[rows][:, cols])
    anywhere_r, anywhere_c = rng.integers(0, h, rn % 17), rng.integers(0, w, cn % 13)
    np.testing.assert_array_equal(take_runs(a, anywhere_r, anywhere_c), a[:, anywhere_r][:, :, anywhere_c])


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), start=st.integers(-90, 40), length=st.integers(0, 90))
def test_reflect_indices_match_numpy_reflect_padding(n, start, length):
    stop = start + length
    if n == 1:
        expected = np.zeros(length, int)
    else:
        expected = reflect_pad_oracle(n, start, stop)
    np.testing.assert_array_equal(reflect_indices(start, stop, n), expected)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 3000), patch=st.integers(1, 300), frac=st.floats(0, 1))
def test_axis_covers_scene_with_margin(size, patch, frac):
    stride = max(1, int(round(patch * frac)))
    ax = Axis(size, patch, stride)
    o = ax.origins()
    margin = (patch - stride) // 2  # half the overlap (plan.py docstring, DESIGN.md "global patch grid")
    assert ax.margin == margin
    assert o[0] == -margin
    assert np.all(np.diff(o) == stride)
    # The last patch reaches at least the margin past the far edge, and no
    # patch is redundant: dropping the last would leave that border short.
    assert o[-1] + patch >= size + margin
    if ax.count > 1:
        assert o[-2] + patch < size + margin


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 2000), patch=st.integers(1, 200), frac=st.floats(0, 1),
       a=st.integers(-50, 2100), n=st.integers(1, 500))
def test_axis_touching_matches_brute_force(size, patch, frac, a, n):
    stride = max(1, int(round(patch * frac)))
    ax = Axis(size, patch, stride)
    assert list(ax.touching(a, a + n)) == covering_patches(ax.origins(), patch, a, a + n)


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 1500), w=st.integers(1, 1500), patch=st.sampled_from([16, 32, 64, 100]),
       overlap=st.sampled_from([0.0, 0.25, 0.5, 0.75]), strip_rows=st.integers(1, 700),
       band_width=st.integers(1, 900))
def test_strips_and_column_bands_partition_the_scene(h, w, patch, overlap, strip_rows, band_width):
    grid = PatchGrid.from_overlap(h, w, patch_size=patch, overlap=overlap)
    strips = list(grid.strips(strip_rows))
    # patch rows: every one exactly once, in order
    assert [i for s in strips for i in s.patch_rows] == list(range(grid.rows.count))
    # emitted rows partition [0, h), and no later strip touches an emitted row
    assert strips[0].emit_rows[0] == 0 and strips[-1].emit_rows[1] == h
    for s, nxt in zip(strips, strips[1:]):
        assert s.emit_rows[1] == nxt.emit_rows[0]
    for k, s in enumerate(strips):
        later = [i for t in strips[k + 1:] for i in t.patch_rows]
        if s.emit_rows[1] > s.emit_rows[0]:
            assert all(grid.rows.origin(i) >= s.emit_rows[1] for i in later)
        assert s.read_rows == (grid.rows.origin(s.patch_rows[0]), grid.rows.origin(s.patch_rows[-1]) + patch)
    bands = list(grid.column_bands(band_width))
    assert bands[0].emit_cols[0] == 0 and bands[-1].emit_cols[1] == w
    for b, nxt in zip(bands, bands[1:]):
        assert b.emit_cols[1] == nxt.emit_cols[0]
    for b in bands:
        assert list(b.patch_cols) == covering_patches(grid.cols.origins(), patch, *b.emit_cols)


def test_grid_is_global_not_strip_relative():
    # Origins are fixed by scene size, patch and stride alone.
    g = PatchGrid.from_overlap(1000, 700, patch_size=256, overlap=0.5)
    assert g.rows.origins().tolist() == [-64 + 128 * i for i in range(8)]
    for strip_rows in (1, 128, 300, 5000):
        origins = [g.rows.origin(i) for s in g.strips(strip_rows) for i in s.patch_rows]
        assert origins == g.rows.origins().tolist()


def test_grid_smaller_than_one_patch():
    g = PatchGrid.from_overlap(70, 100, patch_size=256, overlap=0.5)
    assert g.rows.count == 1 and g.cols.count == 1
    (s,) = g.strips(512)
    assert s.emit_rows == (0, 70)


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=0, width=5, patch_size=4, stride=2), "height must be a positive integer"),
    (dict(height=5, width=5, patch_size=4, stride=5), "stride 5 exceeds patch size 4"),
    (dict(height=5, width=5, patch_size=4, stride=0), "stride must be a positive integer"),
])
def test_grid_validation(kwargs, match):
    with pytest.raises(PlanError, match=match):
        PatchGrid(**kwargs)


def test_grid_is_a_hashable_value():
    a = PatchGrid(100, 100, 32, 16)
    assert a == PatchGrid(100, 100, 32, 16) and hash(a) == hash(PatchGrid(100, 100, 32, 16))
    with pytest.raises(AttributeError):
        a.stride = 3
