"""Spectral index formulas, their registry and the numba kernels that compute them.

Names, band symbols and formulas follow the Awesome Spectral Indices catalogue
(Montero et al., "A standardized catalogue of spectral indices to advance the
use of remote sensing in Earth system research", Scientific Data 10, 197, 2023),
except CCCI, which the catalogue does not list (see :data:`INDICES`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numba
import numpy as np

from tiler.blend import ngjit, pjit

__all__ = ["SpectralIndex", "INDICES", "DENOMINATOR_EPSILON", "compute_index", "get_index"]

#: A denominator whose magnitude is at most this (in the inputs' units, i.e.
#: reflectance) gives nodata instead of a huge or infinite value.
DENOMINATOR_EPSILON = 1e-6

# ------------------------------------------------------------- per-pixel formulas
# Each returns (numerator, denominator); the kernel divides, masks and clips.

@ngjit
def _nd(a, b, p):
    return a - b, a + b


@ngjit
def _savi(n, r, p):
    return (1.0 + p[0]) * (n - r), n + r + p[0]


@ngjit
def _evi(n, r, b, p):
    return p[0] * (n - r), n + p[1] * r - p[2] * b + p[3]


@ngjit
def _ccci(n, re, r, p):
    d_re, d_r = n + re, n + r
    if abs(d_re) <= p[0] or abs(d_r) <= p[0]:
        return 0.0, 0.0
    return (n - re) / d_re, (n - r) / d_r


# ------------------------------------------------------------------- kernels
# One kernel per formula, each calling its formula as a global: numba caches
# those on disk, while a kernel taking the formula as an argument is compiled
# again in every process (about 1.4 s per start of `tiler indices`).

@pjit
def _kernel_nd(a, b, valid, p, eps, lo, hi, out):
    for i in numba.prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.nan
            if valid[i, j]:
                num, den = _nd(np.float64(a[i, j]), np.float64(b[i, j]), p)
                if abs(den) > eps:
                    out[i, j] = min(max(num / den, lo), hi)


@pjit
def _kernel_savi(a, b, valid, p, eps, lo, hi, out):
    for i in numba.prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.nan
            if valid[i, j]:
                num, den = _savi(np.float64(a[i, j]), np.float64(b[i, j]), p)
                if abs(den) > eps:
                    out[i, j] = min(max(num / den, lo), hi)


@pjit
def _kernel_evi(a, b, c, valid, p, eps, lo, hi, out):
    for i in numba.prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.nan
            if valid[i, j]:
                num, den = _evi(np.float64(a[i, j]), np.float64(b[i, j]), np.float64(c[i, j]), p)
                if abs(den) > eps:
                    out[i, j] = min(max(num / den, lo), hi)


@pjit
def _kernel_ccci(a, b, c, valid, p, eps, lo, hi, out):
    for i in numba.prange(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = np.nan
            if valid[i, j]:
                num, den = _ccci(np.float64(a[i, j]), np.float64(b[i, j]), np.float64(c[i, j]), p)
                if abs(den) > eps:
                    out[i, j] = min(max(num / den, lo), hi)


@dataclass(frozen=True)
class SpectralIndex:
    """A spectral index: its inputs, formula, parameters and source.

    Attributes
    ----------
    name : str
        Lower-case short name (``ndvi``), used as a channel name.
    long_name : str
    bands : tuple of str
        Common band names of the inputs, in the order the formula takes them.
    formula : str
        The formula in those band names.
    params : mapping of str to float
        Parameters and their defaults (e.g. SAVI's soil factor ``L``).
    bounds : tuple of float or None
        Range the index is defined in; results are clipped to it. None:
        unbounded, never clipped.
    reference : str
        Source of the formula.
    notes : str
        Where popular implementations differ.
    needs_reflectance : bool
        The formula has additive constants (SAVI's and EVI's ``L``, EVI's
        aerosol terms) calibrated for surface reflectance in [0, 1], so its
        value is meaningless on digital numbers; a normalised difference
        ``(a - b) / (a + b)`` is invariant to a common scale and is not.
    """

    name: str
    long_name: str
    bands: tuple[str, ...]
    formula: str
    reference: str
    params: Mapping[str, float] = field(default_factory=dict)
    bounds: Optional[tuple[float, float]] = None
    notes: str = ""
    needs_reflectance: bool = False
    _kernel: Callable = field(default=_kernel_nd, repr=False, compare=False)

    def __call__(self, *bands: np.ndarray, valid: Optional[np.ndarray] = None, **params: float) -> np.ndarray:
        """Compute the index; see :func:`compute_index`."""
        return compute_index(self, *bands, valid=valid, **params)


def compute_index(index: "SpectralIndex | str", *bands: np.ndarray, valid: Optional[np.ndarray] = None,
                  **params: float) -> np.ndarray:
    """Compute a spectral index, float32, nodata as NaN.

    Parameters
    ----------
    index : SpectralIndex or str
        The index or its name (see :data:`INDICES`).
    *bands : ndarray of shape (row, col)
        The inputs in ``index.bands`` order, in reflectance (any real dtype;
        computed in float64 per pixel).
    valid : ndarray of shape (row, col), bool, optional
        False where any input is nodata; non-finite inputs are nodata too.
    **params : float
        Overrides of ``index.params`` (e.g. ``L=1.0`` for SAVI).

    Returns
    -------
    ndarray of shape (row, col), float32
        NaN where an input is nodata or the denominator is within
        :data:`DENOMINATOR_EPSILON` of zero (never inf, never a silent 0);
        clipped to ``index.bounds`` where the index is bounded.

    Raises
    ------
    ValueError
        For a wrong number of bands, mismatched shapes or an unknown parameter.
    """
    idx = get_index(index) if isinstance(index, str) else index
    if len(bands) != len(idx.bands):
        raise ValueError(f"{idx.name} takes {len(idx.bands)} bands ({', '.join(idx.bands)}), got {len(bands)}")
    unknown = set(params) - set(idx.params)
    if unknown:
        raise ValueError(f"{idx.name} has no parameter(s) {', '.join(sorted(unknown))}; "
                         f"its parameters: {', '.join(idx.params) or 'none'}")
    arrays = [np.asarray(b) for b in bands]
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise ValueError(f"{idx.name}: bands must be 2-D arrays of one shape, got {[a.shape for a in arrays]}")
    ok = np.ones(shape, bool) if valid is None else np.asarray(valid, bool)
    if ok.shape != shape:
        raise ValueError(f"{idx.name}: valid mask is {ok.shape}, bands are {shape}")
    values = {**idx.params, **params}
    p = np.array([DENOMINATOR_EPSILON] if idx.name == "ccci" else [values[k] for k in idx.params], np.float64)
    lo, hi = idx.bounds if idx.bounds is not None else (-math.inf, math.inf)
    out = np.empty(shape, np.float32)
    arrays = [a if a.dtype in (np.float32, np.float64) else a.astype(np.float32) for a in arrays]
    idx._kernel(*arrays, ok, p, DENOMINATOR_EPSILON, lo, hi, out)
    return out


_ND = (-1.0, 1.0)

#: The registry: lower-case name -> :class:`SpectralIndex`.
INDICES: Mapping[str, SpectralIndex] = MappingProxyType({i.name: i for i in (
    SpectralIndex(
        "ndvi", "Normalized Difference Vegetation Index", ("nir", "red"), "(nir - red) / (nir + red)",
        "Rouse et al. (1974), NASA SP-351; Awesome Spectral Indices: NDVI", bounds=_ND),
    SpectralIndex(
        "ndwi", "Normalized Difference Water Index (McFeeters)", ("green", "nir"), "(green - nir) / (green + nir)",
        "McFeeters (1996), Int. J. Remote Sens. 17(7), doi:10.1080/01431169608948714; Awesome Spectral "
        "Indices: NDWI", bounds=_ND,
        notes="Gao's NDWI (NIR/SWIR, vegetation water) is NDMI here, as in the catalogue."),
    SpectralIndex(
        "ndmi", "Normalized Difference Moisture Index (Gao's NDWI)", ("nir", "swir1"),
        "(nir - swir1) / (nir + swir1)",
        "Gao (1996), Remote Sens. Environ. 58(3); Wilson & Sader (2002), doi:10.1016/S0034-4257(01)00318-2; "
        "Awesome Spectral Indices: NDMI", bounds=_ND),
    SpectralIndex(
        "mndwi", "Modified Normalized Difference Water Index", ("green", "swir1"),
        "(green - swir1) / (green + swir1)",
        "Xu (2006), Int. J. Remote Sens. 27(14), doi:10.1080/01431160600589179; Awesome Spectral Indices: MNDWI",
        bounds=_ND),
    SpectralIndex(
        "savi", "Soil-Adjusted Vegetation Index", ("nir", "red"), "(1 + L) * (nir - red) / (nir + red + L)",
        "Huete (1988), Remote Sens. Environ. 25(3), doi:10.1016/0034-4257(88)90106-X; Awesome Spectral "
        "Indices: SAVI", params=MappingProxyType({"L": 0.5}), _kernel=_kernel_savi, needs_reflectance=True,
        notes="The Dstl 3rd-place code used SAVI without L; this follows Huete (1988)."),
    SpectralIndex(
        "evi", "Enhanced Vegetation Index", ("nir", "red", "blue"),
        "g * (nir - red) / (nir + C1 * red - C2 * blue + L)",
        "Huete et al. (2002), Remote Sens. Environ. 83(1-2); Awesome Spectral Indices: EVI",
        params=MappingProxyType({"g": 2.5, "C1": 6.0, "C2": 7.5, "L": 1.0}), _kernel=_kernel_evi,
        needs_reflectance=True,
        notes="The Dstl 3rd-place code used EVI without the gain g = 2.5; this follows the standard."),
    SpectralIndex(
        "ndre", "Normalized Difference Red Edge Index", ("nir", "rededge1"),
        "(nir - rededge1) / (nir + rededge1)",
        "Gitelson & Merzlyak (1994), J. Photochem. Photobiol. B 22(3), doi:10.1016/1011-1344(93)06963-4; "
        "Awesome Spectral Indices: NDREI", bounds=_ND),
    SpectralIndex(
        "ccci", "Canopy Chlorophyll Content Index", ("nir", "rededge1", "red"), "ndre / ndvi",
        "Barnes et al. (2000), Proc. 5th Int. Conf. Precision Agriculture; simplified as NDRE / NDVI "
        "(not in the Awesome Spectral Indices catalogue)", _kernel=_kernel_ccci,
        notes="Barnes et al. scale NDRE between field-specific minimum and maximum lines; the ratio "
              "NDRE / NDVI is the common simplification. The Dstl 3rd-place code used a product; this "
              "is the ratio. Unbounded: nodata where NDVI is within the epsilon of 0."),
    SpectralIndex(
        "ndbi", "Normalized Difference Built-up Index", ("swir1", "nir"), "(swir1 - nir) / (swir1 + nir)",
        "Zha et al. (2003), Int. J. Remote Sens. 24(3), doi:10.1080/01431160304987; Awesome Spectral "
        "Indices: NDBI", bounds=_ND),
)})


def get_index(name: str) -> SpectralIndex:
    """The index called ``name`` (case-insensitive).

    Raises
    ------
    KeyError
        If there is no such index; the message lists those there are.
    """
    try:
        return INDICES[name.lower()]
    except KeyError:
        raise KeyError(f"no spectral index {name!r}; known: {', '.join(INDICES)}") from None
