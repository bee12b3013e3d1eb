"""Blending of overlapping patch predictions: windows and accumulators."""

from tiler.blend._accumulate import Accumulator
from tiler.blend._windows import (
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
    "WINDOWS",
    "WindowFunction",
    "boxcar_window",
    "gaussian_window",
    "get_window",
    "hann_window",
    "spline_window",
    "triangle_window",
]
