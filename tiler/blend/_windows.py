"""Window functions that weight a patch's prediction before blending.

Every window here is separable (the outer product of a 1-D window with itself),
strictly positive everywhere (so that a pixel covered by any patch gets a
positive weight sum) and float32. The blend divides by the accumulated weight
per pixel, so windows need no particular scale; each is normalised to mean 1.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping, Union

import numpy as np

from tiler.errors import PlanError

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_WINDOW",
    "WINDOWS",
    "WindowFunction",
    "get_window",
    "spline_window",
    "hann_window",
    "triangle_window",
    "gaussian_window",
    "boxcar_window",
]

WindowFunction = Callable[[int], np.ndarray]
"""Signature of a window: ``f(patch_size) -> ndarray of shape (row, col)``."""

#: Sigma of the Gaussian window as a fraction of the patch side (a patch edge
#: then gets exp(-0.5 * (0.5 / 0.25) ** 2) = 13.5 % of the centre weight).
GAUSSIAN_SIGMA_FRACTION = 0.25


def _outer(w: np.ndarray) -> np.ndarray:
    w2 = np.outer(w, w)
    return (w2 / w2.mean()).astype(np.float32)


# The 1-D windows in closed form, as scipy.signal.windows defines them (the tests
# compare them with SciPy): importing scipy.signal costs ~1.5 s, once per process,
# inside every run.
def _triang(n: int) -> np.ndarray:
    """``scipy.signal.windows.triang(n)``: the triangle without zero end points."""
    k = np.arange(1, (n + 1) // 2 + 1, dtype=np.float64)
    if n % 2 == 0:
        half = (2 * k - 1) / n
        return np.concatenate([half, half[::-1]])
    half = 2 * k / (n + 1)
    return np.concatenate([half, half[-2::-1]])


def _hann(n: int) -> np.ndarray:
    """``scipy.signal.windows.hann(n)`` (symmetric): ``0.5 - 0.5 cos(2 pi k / (n - 1))``."""
    if n == 1:
        return np.ones(1)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / (n - 1))


def _gaussian(n: int, std: float) -> np.ndarray:
    """``scipy.signal.windows.gaussian(n, std)``: ``exp(-0.5 ((k - (n - 1) / 2) / std) ** 2)``."""
    k = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return np.exp(-0.5 * (k / std) ** 2)


def spline_window(patch_size: int, *, power: int = 2) -> np.ndarray:
    """Squared-spline window of the smooth-blending method (the default).

    Parameters
    ----------
    patch_size : int
        Patch side in pixels, >= 1.
    power : int, default 2
        Spline power; 2 is the original method's.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32
        Outer product of the 1-D window with itself, mean 1, strictly positive.

    Notes
    -----
    With ``t`` the triangular window (``scipy.signal.windows.triang``, values
    in (0, 1], smallest ``1/patch_size`` at the ends), the 1-D window is

    .. math::

        w(t) = \\tfrac12 (2t)^p \\quad (t \\le \\tfrac12), \\qquad
        w(t) = 1 - \\tfrac12 (2(1-t))^p \\quad (t > \\tfrac12),

    two spline pieces that meet at 1/2 with matching slope. It rises from
    nearly 0 at the patch edge to 1 in the centre, so seams between patches
    fade out smoothly.

    References
    ----------
    G. Chevalier, "Smoothly-Blend-Image-Patches" (Vooban, 2017),
    ``_spline_window``; used in the 3rd-place solution of the Kaggle Dstl
    Satellite Imagery Feature Detection challenge.
    """
    t = _triang(patch_size)
    w = np.where(t <= 0.5, 0.5 * (2.0 * t) ** power, 1.0 - 0.5 * (2.0 * (1.0 - t)) ** power)
    return _outer(w)


def hann_window(patch_size: int) -> np.ndarray:
    """Hann window that never reaches zero.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32
        Outer product of ``0.5 - 0.5 cos(2 pi (n + 1) / (N + 1))``,
        n = 0 .. N - 1 (the Hann window of N + 2 points without its two zero
        end points), mean 1.

    References
    ----------
    F. J. Harris, "On the use of windows for harmonic analysis with the
    discrete Fourier transform", Proc. IEEE 66(1), 1978.
    """
    return _outer(_hann(patch_size + 2)[1:-1])


def triangle_window(patch_size: int) -> np.ndarray:
    """Triangular (Bartlett without zero ends) window.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32
        Outer product of ``scipy.signal.windows.triang(patch_size)``, mean 1.
    """
    return _outer(_triang(patch_size))


def gaussian_window(patch_size: int, *, sigma: float = GAUSSIAN_SIGMA_FRACTION) -> np.ndarray:
    """Gaussian window.

    Parameters
    ----------
    patch_size : int
        Patch side in pixels.
    sigma : float, default 0.25
        Standard deviation as a fraction of the patch side.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32
        Outer product of ``exp(-0.5 ((n - (N - 1) / 2) / (sigma N)) ** 2)``, mean 1.
    """
    if sigma <= 0:
        raise PlanError(f"gaussian sigma must be > 0 (a fraction of the patch), got {sigma}")
    return _outer(_gaussian(patch_size, sigma * patch_size))


def boxcar_window(patch_size: int) -> np.ndarray:
    """Flat window: plain averaging of overlapping predictions.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32
        All ones.
    """
    return np.ones((patch_size, patch_size), dtype=np.float32)


#: Registry of named windows: name -> ``f(patch_size) -> ndarray (row, col)``.
WINDOWS: Mapping[str, WindowFunction] = MappingProxyType(
    {
        "spline": spline_window,
        "hann": hann_window,
        "triangle": triangle_window,
        "gaussian": gaussian_window,
        "boxcar": boxcar_window,
    }
)

#: Blending window where neither the user nor the model says.
DEFAULT_WINDOW = "spline"
#: Overlap where neither the user nor the model says: half a patch, the original smooth-blending
#: method's ``subdivisions=2``.
DEFAULT_OVERLAP = 0.5


def get_window(window: Union[str, WindowFunction], patch_size: int) -> np.ndarray:
    """Evaluate a named window, or a user callable, and validate it.

    Parameters
    ----------
    window : str or callable
        A name in :data:`WINDOWS`, or ``f(patch_size) -> ndarray (row, col)``.
    patch_size : int
        Patch side in pixels.

    Returns
    -------
    ndarray of shape (patch_size, patch_size), float32, C-contiguous

    Raises
    ------
    PlanError
        For an unknown name, or a callable whose result has the wrong shape,
        is not finite, or is not strictly positive.
    """
    if isinstance(window, str):
        try:
            func = WINDOWS[window]
        except KeyError:
            raise PlanError(
                f"unknown window {window!r}; choose one of {', '.join(WINDOWS)} "
                "or pass a callable f(patch_size) -> array"
            ) from None
    elif callable(window):
        func = window
    else:
        raise PlanError(f"window must be a name or a callable, got {type(window).__name__}")
    w = np.ascontiguousarray(func(patch_size), dtype=np.float32)
    if w.shape != (patch_size, patch_size):
        raise PlanError(
            f"window returned shape {w.shape}, expected ({patch_size}, {patch_size})"
        )
    if not np.all(np.isfinite(w)) or not np.all(w > 0):
        raise PlanError(
            "window weights must be finite and > 0 everywhere, else a pixel can get "
            "a zero weight sum; shift or clip the window away from zero"
        )
    return w
