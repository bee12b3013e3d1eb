"""Blending of overlapping patch predictions.

Window functions (an immutable registry), the rolling weighted-mean
accumulator (numba kernels, deterministic in parallel), and dihedral (D4)
test-time augmentation.

Names load on first use (PEP 562): reading the window registry or the D4
transforms (a model file's metadata, the predictor) does not import numba; the
accumulator and the JIT flags (:data:`ngjit`, :data:`pjit`, set here once for
every kernel of the package, the index formulas' included) do.
"""

from typing import TYPE_CHECKING

from tiler._lazy import lazy_exports

_EXPORTS = {
    "Accumulator": "_accumulate",
    "GEOMETRIC_EPSILON": "_kernels",
    "ngjit": "_kernels",
    "pjit": "_kernels",
    "TTA_MEANS": "_d4",
    "TTA_TRANSFORMS": "_d4",
    "d4_expand": "_d4",
    "d4_inverse": "_d4",
    "d4_merge": "_d4",
    "d4_transform": "_d4",
    "DEFAULT_OVERLAP": "_windows",
    "DEFAULT_WINDOW": "_windows",
    "WINDOWS": "_windows",
    "WindowFunction": "_windows",
    "boxcar_window": "_windows",
    "gaussian_window": "_windows",
    "get_window": "_windows",
    "hann_window": "_windows",
    "spline_window": "_windows",
    "triangle_window": "_windows",
}

_, __getattr__, __dir__ = lazy_exports("tiler.blend", _EXPORTS)

__all__ = ["Accumulator", "DEFAULT_OVERLAP", "DEFAULT_WINDOW", "GEOMETRIC_EPSILON", "TTA_MEANS", "TTA_TRANSFORMS",
           "WINDOWS", "WindowFunction", "boxcar_window", "d4_expand", "d4_inverse", "d4_merge", "d4_transform",
           "gaussian_window", "get_window", "hann_window", "ngjit", "pjit", "spline_window", "triangle_window"]

if TYPE_CHECKING:  # the names as static analysers and the API reference see them
    from tiler.blend._accumulate import Accumulator
    from tiler.blend._d4 import TTA_MEANS, TTA_TRANSFORMS, d4_expand, d4_inverse, d4_merge, d4_transform
    from tiler.blend._kernels import GEOMETRIC_EPSILON, ngjit, pjit
    from tiler.blend._windows import (
        DEFAULT_OVERLAP,
        DEFAULT_WINDOW,
        WINDOWS,
        WindowFunction,
        boxcar_window,
        gaussian_window,
        get_window,
        hann_window,
        spline_window,
        triangle_window,
    )
