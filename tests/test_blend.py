"""Window functions and the accumulator."""

import numpy as np
import pytest
from scipy.signal import windows as sig

from tiler.blend import WINDOWS, get_window, spline_window
from tiler.errors import PlanError


@pytest.mark.parametrize("name", sorted(WINDOWS))
@pytest.mark.parametrize("patch", [1, 2, 7, 64, 256])
def test_windows_positive_symmetric_float32(name, patch):
    w = get_window(name, patch)
    assert w.shape == (patch, patch) and w.dtype == np.float32
    assert np.all(w > 0) and np.all(np.isfinite(w))
    np.testing.assert_allclose(w, w.T, rtol=1e-6)
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-5)


def test_spline_window_matches_the_published_piecewise_formula():
    # Hand evaluation of the smooth-blending spline (power 2) on an 8-point
    # triangle: t = 1/8, 3/8, 5/8, 7/8, 7/8, 5/8, 3/8, 1/8.
    t = np.array([1, 3, 5, 7, 7, 5, 3, 1]) / 8
    expected_1d = np.where(t <= 0.5, 0.5 * (2 * t) ** 2, 1 - 0.5 * (2 * (1 - t)) ** 2)
    assert expected_1d[0] == pytest.approx(1 / 32) and expected_1d[3] == pytest.approx(1 - 1 / 32)
    w = spline_window(8).astype(np.float64)
    expected = np.outer(expected_1d, expected_1d)
    np.testing.assert_allclose(w / w.max(), expected / expected.max(), rtol=1e-6)


def test_hann_window_has_no_zero_at_the_edge():
    w = get_window("hann", 16)
    assert w.min() > 0
    np.testing.assert_allclose(w[0] / w[0].max(), sig.hann(18)[1:-1] / sig.hann(18)[1:-1].max(), rtol=1e-5)


def test_user_callable_window_is_accepted_and_validated():
    w = get_window(lambda p: np.full((p, p), 2.0), 8)
    assert w.dtype == np.float32 and np.all(w == 2.0)
    with pytest.raises(PlanError, match="expected \\(8, 8\\)"):
        get_window(lambda p: np.ones((p, p + 1)), 8)
    with pytest.raises(PlanError, match="must be finite and > 0"):
        get_window(lambda p: np.zeros((p, p)), 8)
    with pytest.raises(PlanError, match="unknown window 'cosine'"):
        get_window("cosine", 8)


def test_registry_is_immutable():
    with pytest.raises(TypeError):
        WINDOWS["mine"] = spline_window  # type: ignore[index]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 64, 191, 192])
def test_window_pieces_equal_scipys_definitions(n):
    """The library builds its 1-D windows in closed form (no scipy.signal import in a run); SciPy is the oracle."""
    from tiler.blend._windows import _gaussian, _hann, _triang

    np.testing.assert_allclose(_triang(n), sig.triang(n), rtol=0, atol=1e-15)
    np.testing.assert_allclose(_hann(n + 2), sig.hann(n + 2), rtol=0, atol=1e-15)
    np.testing.assert_allclose(_gaussian(n, 0.25 * n), sig.gaussian(n, std=0.25 * n), rtol=0, atol=1e-15)
