"""The geometry of a scene's band groups: where a group's pixels lie on the reference grid, and bounds checks.

Pure values and arithmetic on transforms (no pixel is read): the placement of a band group
(:class:`GroupGrid`), a band's place in a model's channels (:class:`BandMapping`), and the check that a
georeferenced grid lies where its CRS can be (:func:`check_bounds`).
"""


from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS

from tiler.errors import SceneReadError

__all__ = ["BandMapping", "GroupGrid", "check_bounds"]

#: GDAL's warper needs a CRS on both sides. For a reference grid without
#: georeferencing both sides get this same stand-in, so GDAL applies the
#: transforms only and never reprojects.
_STAND_IN_CRS = CRS.from_epsg(3857)

#: Relative tolerance below which two pixel sizes count as equal.
_SAME_SCALE_RTOL = 1e-9

#: Source pixels read beyond a window's footprint, per unit of the larger of 1
#: and the downsampling ratio: covers the widest kernel offered (Lanczos, radius
#: 3 source pixels, which GDAL widens by the ratio when downsampling).
_KERNEL_MARGIN = 3


@dataclass(frozen=True, slots=True)
class BandMapping:
    """How model channels were found among a scene's bands.

    Attributes
    ----------
    indexes : tuple of int
        1-based band index per channel, in channel order.
    method : {"names", "position", "explicit"}
        Matched by band names, by position (unnamed bands, same count), or
        given by the caller.
    """

    indexes: tuple[int, ...]
    method: str


@dataclass(frozen=True)
class GroupGrid:
    """A band group's own pixel grid and how it is placed on the reference grid.

    Attributes
    ----------
    height, width : int
        Rows and columns of the group's files.
    transform : affine.Affine
        The files' own transform (identity when not georeferenced).
    placement : affine.Affine
        Group pixel to reference coordinates (the reference CRS, or reference
        pixels when the reference has no georeferencing), before registration.
    placed_by : {"reference", "transform", "extent"}
        ``transform``: by georeferencing; ``extent``: the group's extent scaled
        onto the reference extent (for files without georeferencing).
    pixel_size : float
        Side of a group pixel in reference coordinates (metres for a projected
        CRS), the geometric mean of its two axes.
    """

    height: int
    width: int
    transform: Affine
    placement: Affine
    placed_by: str
    pixel_size: float


#: Slack on the limits of longitude and latitude, degrees: a grid whose pixel centres are inside may have
#: its outer edge half a pixel beyond (global products on -180.05 ... 180.05).
_DEGREE_SLACK = 1.0


def check_bounds(path: str, crs: CRS, transform: Affine, width: int, height: int) -> None:
    """Refuse a grid whose bounds cannot be in its declared CRS (the CRS is wrong).

    A geographic CRS holds longitudes in [-180, 360] (0-360 products included) and latitudes in
    [-90, 90] degrees; a projected CRS holds coordinates that map back to longitude and latitude
    (GDAL's inverse projection of the four corners is finite).

    Parameters
    ----------
    path : str
        The scene (named in the message).
    crs : rasterio.crs.CRS
    transform : affine.Affine
    width, height : int
        The grid, pixels.

    Raises
    ------
    SceneReadError
        With the CRS, the bounds and ``rio edit-info --crs`` as the fix (exit code 2). EPSG:4326 declared on
        UTM coordinates (longitudes of 300000) is the case this catches; polygons' geodesic areas would be
        NaN there.
    """
    t = transform
    corners = [(c, r) for c in (0, width) for r in (0, height)]
    xs = [t.a * c + t.b * r + t.c for c, r in corners]
    ys = [t.d * c + t.e * r + t.f for c, r in corners]
    left, right, bottom, top = min(xs), max(xs), min(ys), max(ys)
    fix = (f"the CRS is wrong: set the right one with `rio edit-info --crs EPSG:CODE {path}` (for example the "
           "UTM zone the coordinates are in), or give the scene its correct georeferencing")
    where = f"scene {path!r} declares {crs.to_string() or 'a CRS'} but its bounds ({left:.6g}, {bottom:.6g}, " \
            f"{right:.6g}, {top:.6g})"
    if crs.is_geographic:
        if not (-180 - _DEGREE_SLACK <= left and right <= 360 + _DEGREE_SLACK
                and -90 - _DEGREE_SLACK <= bottom and top <= 90 + _DEGREE_SLACK):
            raise SceneReadError(f"{where} are not longitudes and latitudes in degrees; {fix}")
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lon, lat = rasterio.warp.transform(crs, CRS.from_epsg(4326), xs, ys)
    except (rasterio.errors.CRSError, ValueError):
        return  # a CRS GDAL cannot invert: nothing to judge
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise SceneReadError(f"{where} do not map to longitudes and latitudes in that CRS; {fix}")


def _affine_scale(t: Affine) -> float:
    return math.sqrt(abs(t.determinant))
