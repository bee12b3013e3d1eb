"""Blending of overlapping patch predictions.

Window functions (an immutable registry), the rolling weighted-mean
accumulator (numba kernels, deterministic in parallel), and dihedral (D4)
test-time augmentation.
"""

from tiler.blend._accumulate import Accumulator
from tiler.blend._d4 import TTA_MEANS, TTA_TRANSFORMS, d4_expand, d4_inverse, d4_merge, d4_transform
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

__all__ = [
    "Accumulator",
    "DEFAULT_OVERLAP",
    "DEFAULT_WINDOW",
    "TTA_MEANS",
    "TTA_TRANSFORMS",
    "WINDOWS",
    "WindowFunction",
    "boxcar_window",
    "d4_expand",
    "d4_inverse",
    "d4_merge",
    "d4_transform",
    "gaussian_window",
    "get_window",
    "hann_window",
    "spline_window",
    "triangle_window",
]
