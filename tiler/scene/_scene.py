"""Opening a scene and reading windows of its reference grid.

A scene is one raster, a folder in a recognised sensor layout, or a scene
manifest (TOML). It has one or more band groups, each on its own pixel grid;
one of them (the reference group) defines the reference grid that the whole
pipeline works on. Reading a window of the reference grid reads every other
group through a resampling onto that grid (GDAL's warper via
:func:`rasterio.warp.reproject`), including the group's registration
correction, and reads only the window plus a small margin of each file.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.warp import reproject
from rasterio.windows import Window

from tiler._logging import notice
from tiler.errors import BandMismatchError, SceneReadError
from tiler.plan import reflect_indices, take_runs
from tiler.scene._bands import Band, BandGroup
from tiler.scene._layouts import Layout, detect_layout
from tiler.scene._manifest import read_manifest
from tiler.scene._stac import is_stac, read_stac_item, split_scene
from tiler.storage import configure_gdal, explain, is_url, redact, redact_text

__all__ = ["Scene", "open_scene", "BandMapping", "GroupGrid", "check_bounds"]

log = logging.getLogger(__name__)

_COLOR_NAMES = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.alpha: "alpha",
}

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


class Scene:
    """An open scene: band groups, the reference grid and windowed reads.

    Use :func:`open_scene` (a context manager) to create one.

    Attributes
    ----------
    path : str
    kind : str
        ``raster``, ``manifest``, ``sentinel2``, ``landsat`` or ``worldview3``.
    groups : tuple of BandGroup
    reference : str
        Name of the reference group.
    height, width : int
        Rows and columns of the reference grid.
    count : int
        Bands over all groups; band ``i`` (1-based) is the i-th band of the
        groups in order.
    crs : rasterio.crs.CRS or None
    transform : affine.Affine
        Reference pixel to CRS coordinates (identity when not georeferenced).
    georeferenced : bool
        Whether the reference grid has a CRS or transform.
    gcps : tuple of (tuple of GroundControlPoint, CRS) or None
        The reference files' ground control points and their CRS, where they
        are georeferenced by GCPs alone (no transform).
    rpcs : rasterio.rpc.RPC or None
        The reference files' rational polynomial coefficients, where they have
        no transform.
    band_names : tuple of (str or None)
    notes : tuple of str
        Assumptions made when the scene was recognised (radiometric scaling).
    corrections : dict of str to affine.Affine
        Registration correction per group, in reference pixel coordinates:
        where a group pixel placed at reference position ``u`` really belongs.
        Identity until :meth:`set_correction`.
    cloud_mask : CloudMask or None
        The product's own cloud mask (Landsat QA band, Sentinel-2 SCL ...),
        read by :meth:`read_cloud_mask`.
    """

    def __init__(self, path: str, layout: Layout, reference: Optional[str] = None) -> None:
        self.path = path
        self.kind = layout.kind
        self.groups = layout.groups
        self.notes = layout.notes
        self.cloud_mask = layout.cloud_mask
        self._assumed_fill: dict[str, float] = {}
        self._datasets: dict[str, rasterio.io.DatasetReader] = {}
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise SceneReadError(f"scene {path!r}: band group names must be unique, got {names}")
        try:
            for g in self.groups:
                for p in g.paths:
                    if p not in self._datasets:
                        self._datasets[p] = _open(p)
            if self.cloud_mask is not None:
                self._datasets[self.cloud_mask.path] = _open(self.cloud_mask.path)
            raw = {g.name: self._group_raw_grid(g) for g in self.groups}
            self.reference = reference or layout.reference or min(
                names, key=lambda n: _affine_scale(raw[n][2]) if raw[n][3] else 1.0 / (raw[n][0] * raw[n][1]))
            if self.reference not in names:
                raise SceneReadError(f"scene {path!r} has no band group {self.reference!r}; its groups: "
                                     f"{', '.join(names)}")
            height, width, t, geo, crs = raw[self.reference]
            self.height, self.width, self.crs = height, width, crs
            self.georeferenced = geo
            self.transform = t
            if geo and crs is not None:
                check_bounds(path, crs, t, width, height)
            self.gcps, self.rpcs = None, None
            if not geo:  # placed on the Earth by GCPs or RPCs alone: kept for every output
                ref = self._datasets[next(g for g in self.groups if g.name == self.reference).paths[0]]
                points, points_crs = ref.gcps
                if points and points_crs is not None:
                    self.gcps = (tuple(points), points_crs)
                self.rpcs = ref.rpcs
            self._grids = {n: self._place(n, raw[n]) for n in names}
        except BaseException:
            self.close()
            raise
        self.count = sum(len(g.bands) for g in self.groups)
        self._bands: list[tuple[BandGroup, int, Band]] = [(g, j, b) for g in self.groups for j, b in enumerate(g.bands)]
        self.band_names: tuple[Optional[str], ...] = tuple(b.name for _, _, b in self._bands)
        self.corrections: dict[str, Affine] = {n: Affine.identity() for n in names}

    # --- opening -----------------------------------------------------------------

    def _group_raw_grid(self, g: BandGroup):
        first = self._datasets[g.paths[0]]
        for p in g.paths:
            ds = self._datasets[p]
            if (ds.height, ds.width) != (first.height, first.width) or ds.transform != first.transform \
                    or ds.crs != first.crs:
                raise SceneReadError(
                    f"band group {g.name!r}: {p!r} ({ds.width}x{ds.height}, {ds.transform.a:g} per pixel) is not on "
                    f"the grid of {g.paths[0]!r} ({first.width}x{first.height}, {first.transform.a:g} per pixel); "
                    "files of one group must share a grid: put them in separate groups"
                )
        for b in g.bands:
            if b.index > self._datasets[b.path].count:
                raise SceneReadError(f"band group {g.name!r}: {b.path!r} has {self._datasets[b.path].count} band(s), "
                                     f"not band {b.index}")
        geo = first.crs is not None or first.transform != Affine.identity()
        return first.height, first.width, first.transform, geo, first.crs

    def _place(self, name: str, raw) -> GroupGrid:
        height, width, t, geo, crs = raw
        if name == self.reference:
            return GroupGrid(height, width, t, t, "reference", _affine_scale(t))
        if geo and self.georeferenced:
            if crs != self.crs:
                raise SceneReadError(
                    f"band group {name!r} is in {crs} but the reference group {self.reference!r} is in {self.crs}; "
                    "reproject the group's files to the reference CRS first (e.g. gdalwarp -t_srs)"
                )
            return GroupGrid(height, width, t, t, "transform", _affine_scale(t))
        # No georeferencing on one side: scale the group's extent onto the reference extent.
        placement = self.transform @ Affine.scale(self.width / width, self.height / height)
        return GroupGrid(height, width, t, placement, "extent", _affine_scale(placement))

    # --- geometry ------------------------------------------------------------------

    def grid(self, name: str) -> GroupGrid:
        """The pixel grid of band group ``name`` (see :class:`GroupGrid`)."""
        return self._grids[self._check_group(name)]

    def group(self, name: str) -> BandGroup:
        """The band group called ``name``."""
        self._check_group(name)
        return next(g for g in self.groups if g.name == name)

    def _check_group(self, name: str) -> str:
        if name not in self._grids:
            raise SceneReadError(f"scene {self.path!r} has no band group {name!r}; its groups: "
                                 f"{', '.join(self._grids)}")
        return name

    def rename_bands(self, names: Sequence[str]) -> None:
        """Give the scene's bands these names (one per band, e.g. for unnamed training images)."""
        if len(names) != self.count:
            raise BandMismatchError(f"{len(names)} band name(s) given for the {self.count} band(s) of {self.path!r}")
        self._bands = [(g, j, replace(b, name=n.strip().lower(), aliases=()))
                       for (g, j, b), n in zip(self._bands, names)]
        self.band_names = tuple(b.name for _, _, b in self._bands)

    def value_dtype(self, index: int) -> str:
        """Dtype of 1-based band ``index`` as the pipeline sees it.

        The file's own dtype (``uint8``, ``uint16`` ...) when the band is read
        unscaled; ``float32`` once a radiometric scale or offset applies.
        """
        _, _, b = self._bands[index - 1]
        if b.scale != 1.0 or b.offset != 0.0:
            return "float32"
        return str(self._datasets[b.path].dtypes[b.index - 1])

    def pixel_size_m(self) -> Optional[float]:
        """Side of a reference-grid pixel in metres; None without georeferencing.

        Where the scene has GCPs alone, their least-squares affine
        (:func:`rasterio.transform.from_gcps`) gives it; where it has RPCs
        alone, their longitude and latitude scales per pixel.

        For a geographic CRS, degrees are converted at the scene centre's
        latitude with the WGS 84 mean radius of 6,371,008.8 m (Moritz 2000,
        "Geodetic Reference System 1980").
        """
        transform, crs = self.transform, self.crs
        if not self.georeferenced and self.gcps:  # the least-squares affine of the GCPs
            from rasterio.transform import from_gcps

            transform, crs = from_gcps(list(self.gcps[0])), self.gcps[1]
        elif not self.georeferenced and self.rpcs is not None:  # the RPCs' scales: degrees per pixel
            r = self.rpcs
            transform = Affine(r.long_scale / r.samp_scale, 0, r.long_off, 0, -r.lat_scale / r.line_scale, r.lat_off)
            crs = CRS.from_epsg(4326)
        elif not self.georeferenced or crs is None:
            return None
        size = _affine_scale(transform)
        if crs.is_geographic:
            lat = (transform @ (self.width / 2, self.height / 2))[1]
            metres_per_degree = math.pi * 6_371_008.8 / 180.0
            return size * metres_per_degree * math.sqrt(max(math.cos(math.radians(lat)), 1e-6))
        try:
            factor = crs.linear_units_factor[1]
        except Exception:  # a CRS without linear units (rasterio raises CRSError)
            factor = 1.0
        return size * factor

    def band(self, index: int) -> Band:
        """The :class:`Band` behind 1-based scene band ``index``."""
        self.group_of(index)
        return self._bands[index - 1][2]

    def group_of(self, index: int) -> str:
        """Name of the band group holding 1-based scene band ``index``."""
        if not 1 <= index <= self.count:
            raise BandMismatchError(f"band index {index} out of range: {self.path!r} has bands 1..{self.count}")
        return self._bands[index - 1][0].name

    def set_correction(self, name: str, correction: Affine) -> None:
        """Set a group's registration correction.

        Parameters
        ----------
        name : str
            A band group other than the reference.
        correction : affine.Affine
            Maps the reference pixel position where georeferencing places a
            group pixel to where it really belongs (identity: no correction).
        """
        if self._check_group(name) == self.reference and correction != Affine.identity():
            raise ValueError("the reference group defines the grid and takes no correction")
        self.corrections[name] = correction

    def source_transform(self, name: str, *, corrected: bool = True) -> Affine:
        """Group pixel to reference coordinates, with its registration correction.

        Returns
        -------
        affine.Affine
            ``R @ C @ ~R @ placement`` where ``R`` is the reference transform
            and ``C`` the group's correction (reference pixel coordinates).
        """
        grid = self.grid(name)
        if not corrected or self.corrections[name] == Affine.identity():
            return grid.placement
        r = self.transform
        return r @ self.corrections[name] @ ~r @ grid.placement

    # --- reading -----------------------------------------------------------------

    def _read_file_bands(self, g: BandGroup, positions: Sequence[int], window: Window,
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Raw bands ``positions`` of group ``g`` in ``window`` of its own grid; NaN where invalid."""
        shape = (int(window.height), int(window.width))
        valid = np.ones(shape, bool)
        by_path: dict[str, list[int]] = {}
        for k, j in enumerate(positions):
            by_path.setdefault(g.bands[j].path, []).append(k)
        if len(by_path) != 1:  # the files' bands are merged; one file's read is the result itself
            out = np.empty((len(positions),) + shape, np.float32)
        floating = False  # integer samples are always finite
        for path, ks in by_path.items():
            ds = self._datasets[path]
            idx = [g.bands[positions[k]].index for k in ks]
            floating |= any(np.dtype(ds.dtypes[i - 1]).kind in "fc" for i in idx)
            try:
                data = ds.read(idx, window=window, out_dtype=np.float32)
                if g.nodata is None:
                    valid &= ds.dataset_mask(window=window) > 0
                    if g.name in self._assumed_fill:
                        valid &= ~(data == self._assumed_fill[g.name]).all(axis=0)
                else:
                    valid &= (data != g.nodata).all(axis=0)
            except RasterioIOError as exc:
                if is_url(path):  # the network or the store, most likely: said as such (exit 1 to retry)
                    raise explain(path, str(exc), f"reading {window!r} of", probe=True) or SceneReadError(
                        f"cannot read {window!r} of {redact(path)}: {redact_text(str(exc))}; the object may be "
                        "truncated or "
                        "corrupt") from None
                raise SceneReadError(
                    f"cannot read {window!r} of {path!r}: {exc}; the file may be truncated or corrupt"
                ) from None
            if len(by_path) == 1:
                out = data  # one file gives every band, in order: no copy
            else:
                out[ks] = data
        if floating:
            valid &= np.isfinite(out).all(axis=0)
        return out, valid

    def nodata(self, name: str) -> Union[None, float, str]:
        """The nodata of band group ``name`` as reads honour it.

        Returns
        -------
        float, str or None
            The group's declared ``nodata`` (manifest, sensor layout), else the
            value assumed from the image content (:meth:`assume_fill`), else the
            files' own nodata value (NaN included), else ``"mask"`` where the
            files carry an internal mask band (or alpha), else None.
        """
        g = self.group(name)
        if g.nodata is not None:
            return float(g.nodata)
        if name in self._assumed_fill:
            return float(self._assumed_fill[name])
        values = {float(v) for p in g.paths for v in self._datasets[p].nodatavals if v is not None}
        if values:
            return min(values, key=lambda v: (not math.isnan(v), v))
        for p in g.paths:
            flags = self._datasets[p].mask_flag_enums
            if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
                return "mask"
        return None

    def striped(self) -> bool:
        """Whether a band file is read in full-width rows (JPEG, PNG, striped GeoTIFF): no random access.

        Returns
        -------
        bool
            True when any band file's blocks span its whole width, so that a
            small window costs the decoding of whole rows (and for JPEG, of
            every row above it).
        """
        return any(ds.block_shapes and ds.block_shapes[0][1] >= ds.width and ds.width > 1
                   for p, ds in self._datasets.items() if self.cloud_mask is None or p != self.cloud_mask.path)

    def dataset(self, path: str) -> rasterio.io.DatasetReader:
        """The open dataset of one of the scene's files (a band file or the cloud mask)."""
        return self._datasets[path]

    def assume_fill(self, name: str, value: Optional[float]) -> None:
        """Treat ``value`` in every read band of group ``name`` as nodata (None: stop).

        For registration on files with undeclared fill
        (:func:`tiler.registration.detect_fill`); a declared ``nodata`` wins.
        """
        self._check_group(name)
        if value is None:
            self._assumed_fill.pop(name, None)
        else:
            self._assumed_fill[name] = float(value)

    def read_cloud_mask(self, dst_transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """The product cloud mask on any grid in reference coordinates (nearest neighbour).

        Parameters
        ----------
        dst_transform : affine.Affine
            Destination pixel to reference coordinates.
        shape : tuple of int
            Destination ``(row, col)``.

        Returns
        -------
        ndarray of shape (row, col), bool
            True where the mask says cloud (False outside the mask).

        Raises
        ------
        SceneReadError
            If the scene has no cloud mask, or GDAL fails to read it.
        """
        if self.cloud_mask is None:
            raise SceneReadError(f"scene {self.path!r} has no cloud mask")
        ds = self._datasets[self.cloud_mask.path]
        raw = np.zeros(shape, np.float32)
        crs = self.crs if self.georeferenced and self.crs is not None else _STAND_IN_CRS
        rows, cols = shape
        xs, ys = zip(*((~ds.transform @ (dst_transform @ (c, r))) for c, r in ((0, 0), (cols, 0), (0, rows),
                                                                             (cols, rows))))
        c0, c1 = max(0, math.floor(min(xs)) - 1), min(ds.width, math.ceil(max(xs)) + 1)
        r0, r1 = max(0, math.floor(min(ys)) - 1), min(ds.height, math.ceil(max(ys)) + 1)
        if c1 <= c0 or r1 <= r0:
            return np.zeros(shape, bool)
        try:
            src = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=np.float32)
        except RasterioIOError as exc:
            raise SceneReadError(f"cannot read the cloud mask {self.cloud_mask.path!r}: {exc}") from None
        reproject(src, raw, src_transform=ds.transform @ Affine.translation(c0, r0), src_crs=crs,
                  dst_transform=dst_transform, dst_crs=crs, resampling=Resampling.nearest, src_nodata=None,
                  dst_nodata=0)
        return self.cloud_mask.cloudy(raw.astype(np.uint32))

    def _scale(self, g: BandGroup, positions: Sequence[int], data: np.ndarray) -> None:
        for k, j in enumerate(positions):
            b = g.bands[j]
            if b.scale != 1.0:
                data[k] *= np.float32(b.scale)
            if b.offset != 0.0:
                data[k] += np.float32(b.offset)

    def resampling_for(self, name: str, dst_pixel_size: float) -> str:
        """Resampling a group gets onto a grid of ``dst_pixel_size`` (reference units).

        ``group.resampling`` (default bilinear) when upsampling or at the same
        resolution, ``group.downsampling`` (default average: area-weighted,
        never point-sampled) when the destination is coarser.
        """
        g, grid = self.group(name), self.grid(name)
        ratio = dst_pixel_size / grid.pixel_size
        if ratio > 1.0 + _SAME_SCALE_RTOL:
            return g.downsampling
        return g.resampling

    def warp(self, name: str, dst_transform: Affine, shape: tuple[int, int], *,
             positions: Optional[Sequence[int]] = None, resampling: Optional[str] = None,
             corrected: bool = True, scaled: bool = True, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Resample bands of a group onto any grid in reference coordinates.

        Reads only the source pixels the destination needs (its footprint plus
        the resampling kernel's reach).

        Parameters
        ----------
        name : str
            Band group.
        dst_transform : affine.Affine
            Destination pixel to reference coordinates.
        shape : tuple of int
            Destination ``(row, col)``.
        positions : sequence of int, optional
            0-based bands of the group; default all.
        resampling : str, optional
            rasterio resampling name; default :meth:`resampling_for` the
            destination pixel size. A destination that is the group's own grid
            shifted by whole pixels is copied exactly (nearest).
        corrected : bool, default True
            Apply the group's registration correction.
        scaled : bool, default True
            Apply the bands' radiometric scale and offset.
        strict : bool, default False
            Where the destination is coarser than the group: a destination
            pixel is valid only where every source pixel under it is (GDAL's
            ``min`` of the validity), not where any is (the average of the
            valid ones): a processing grid never labels a scene pixel that was
            nodata.

        Returns
        -------
        bands : ndarray of shape (band, row, col), float32
            NaN where invalid.
        valid : ndarray of shape (row, col), bool
            False where any band is nodata or outside the group's files.

        Raises
        ------
        SceneReadError
            If GDAL fails to read a file.
        """
        g, grid = self.group(name), self.grid(name)
        positions = list(range(len(g.bands))) if positions is None else list(positions)
        rows, cols = shape
        src_t = self.source_transform(name, corrected=corrected)
        to_src = ~src_t @ dst_transform
        xs, ys = zip(*(to_src @ (c, r) for c, r in ((0, 0), (cols, 0), (0, rows), (cols, rows))))
        ratio = _affine_scale(dst_transform) / grid.pixel_size
        margin = math.ceil(_KERNEL_MARGIN * max(1.0, ratio)) + 1
        c0, c1 = max(0, math.floor(min(xs)) - margin), min(grid.width, math.ceil(max(xs)) + margin)
        r0, r1 = max(0, math.floor(min(ys)) - margin), min(grid.height, math.ceil(max(ys)) + margin)
        dst = np.full((len(positions), rows, cols), np.nan, np.float32)
        if c1 <= c0 or r1 <= r0:
            return dst, np.zeros(shape, bool)
        src, src_valid = self._read_file_bands(g, positions, Window(c0, r0, c1 - c0, r1 - r0))
        src[:, ~src_valid] = np.nan
        exact = (abs(to_src.a - 1) < 1e-12 and abs(to_src.e - 1) < 1e-12 and to_src.b == 0 and to_src.d == 0
                 and float(to_src.c).is_integer() and float(to_src.f).is_integer())
        if exact:
            # The destination is the group's own grid shifted by whole pixels: copy.
            dr, dc = int(to_src.f) - r0, int(to_src.c) - c0
            rs, cs = slice(max(0, -dr), min(rows, src.shape[1] - dr)), slice(max(0, -dc), min(cols, src.shape[2] - dc))
            dst[:, rs, cs] = src[:, rs.start + dr:rs.stop + dr, cs.start + dc:cs.stop + dc]
        else:
            method = resampling or self.resampling_for(name, _affine_scale(dst_transform))
            crs = self.crs if self.georeferenced and self.crs is not None else _STAND_IN_CRS
            reproject(src, dst, src_transform=src_t @ Affine.translation(c0, r0), src_crs=crs,
                      dst_transform=dst_transform, dst_crs=crs, src_nodata=np.nan, dst_nodata=np.nan,
                      resampling=Resampling[method])
            if strict and ratio > 1.0 + _SAME_SCALE_RTOL and not src_valid.all():
                everywhere = np.ones(shape, np.uint8)
                reproject(src_valid.astype(np.uint8), everywhere, src_transform=src_t @ Affine.translation(c0, r0),
                          src_crs=crs, dst_transform=dst_transform, dst_crs=crs, src_nodata=None,
                          resampling=Resampling.min)
                dst[:, everywhere == 0] = np.nan
        if scaled:
            self._scale(g, positions, dst)
        return dst, np.isfinite(dst).all(axis=0)

    def read(self, rows: tuple[int, int], cols: tuple[int, int],
             indexes: Sequence[int], *, grid=None) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the reference grid (or of a processing grid), reflect-padded past the edges.

        Bands of the reference group are read directly; bands of other groups
        are resampled onto the window through their registration correction
        (see :meth:`warp`). Only the pixels inside the scene that the window
        needs are read. On a resampled processing grid every group, the
        reference included, is resampled onto it (averaged where the grid is
        coarser), and a pixel is valid only where every scene pixel it averages
        is.

        Parameters
        ----------
        rows, cols : tuple of int
            ``(start, stop)`` in reference pixels; may reach past the edges,
            where the scene is mirrored (NumPy ``reflect`` mode).
        indexes : sequence of int
            1-based scene band indexes to read, in output order.
        grid : tiler.scene.ProcessingGrid, optional
            Read this grid's pixels (``rows`` and ``cols`` are its own); default the reference grid.

        Returns
        -------
        bands : ndarray of shape (band, row, col), float32
            Radiometrically scaled (``dn * scale + offset`` per band).
        valid : ndarray of shape (row, col), bool
            False where any band read is nodata (GDAL's dataset mask or the
            group's nodata value), not finite, or outside its group's files.

        Raises
        ------
        SceneReadError
            If GDAL fails to read a window (truncated or corrupt file).
        """
        resampled = grid is not None and grid.resampled
        height, width = (grid.height, grid.width) if resampled else (self.height, self.width)
        ridx = reflect_indices(rows[0], rows[1], height)
        cidx = reflect_indices(cols[0], cols[1], width)
        r0, r1 = int(ridx.min()), int(ridx.max()) + 1
        c0, c1 = int(cidx.min()), int(cidx.max()) + 1
        indexes = list(indexes)
        bad = [i for i in indexes if not 1 <= i <= self.count]
        if bad:
            raise BandMismatchError(f"band index(es) {bad} out of range: {self.path!r} has bands 1..{self.count}")
        by_group: dict[str, tuple[BandGroup, list[int], list[int]]] = {}
        for k, i in enumerate(indexes):
            g, j, _ = self._bands[i - 1]
            entry = by_group.setdefault(g.name, (g, [], []))
            entry[1].append(k)
            entry[2].append(j)
        if len(by_group) > 1:  # the groups' reads are merged; one group's read is the result itself
            data = np.empty((len(indexes), r1 - r0, c1 - c0), np.float32)
            valid = np.ones((r1 - r0, c1 - c0), bool)
        for name, (g, ks, positions) in by_group.items():
            if resampled:
                part, v = self.warp(name, grid.transform @ Affine.translation(c0, r0), (r1 - r0, c1 - c0),
                                    positions=positions, strict=True)
            elif name == self.reference:
                part, v = self._read_file_bands(g, positions, Window(c0, r0, c1 - c0, r1 - r0))
                self._scale(g, positions, part)
            else:
                part, v = self.warp(name, self.transform @ Affine.translation(c0, r0), (r1 - r0, c1 - c0),
                                    positions=positions)
            if len(by_group) == 1:
                data, valid = part, v
            else:
                data[ks] = part
                valid &= v
        contiguous = (r0 == rows[0] and r1 == rows[1] and c0 == cols[0] and c1 == cols[1])
        if not contiguous:  # the mirrored margins: copied run by run, not gathered pixel by pixel
            data = take_runs(data, ridx - r0, cidx - c0)
            valid = take_runs(valid, ridx - r0, cidx - c0)
        return data, valid

    # --- names -------------------------------------------------------------------

    def describe_bands(self) -> str:
        """Human-readable list of bands, e.g. ``"1 (red), 2 (green), 3 (unnamed)"``."""
        return ", ".join(f"{i} ({n or 'unnamed'})" for i, n in enumerate(self.band_names, start=1))

    def describe(self) -> dict:
        """The scene's groups as a JSON-ready dict (for reports)."""
        groups = []
        for g in self.groups:
            grid = self._grids[g.name]
            groups.append({
                "name": g.name, "bands": [b.name for b in g.bands], "files": [redact(p) for p in g.paths],
                "width": grid.width, "height": grid.height, "pixel_size": grid.pixel_size,
                "placed_by": grid.placed_by,
                "scale": [b.scale for b in g.bands], "offset": [b.offset for b in g.bands],
            })
        return {"path": redact(self.path), "kind": self.kind, "reference": self.reference, "width": self.width,
                "height": self.height, "crs": self.crs.to_string() if self.crs else None,
                "transform": list(self.transform)[:6] if self.georeferenced else None,
                "groups": groups, "notes": list(self.notes)}

    def band_lookup(self) -> dict[str, int]:
        """Band name or alias -> 1-based scene band index (the first band with it)."""
        lookup: dict[str, int] = {}
        for i, (_, _, b) in enumerate(self._bands, start=1):
            for n in ((b.name,) if b.name else ()) + b.aliases:
                lookup.setdefault(n, i)
        return lookup

    def saturation_value(self, index: int) -> float:
        """Value of a saturated pixel of 1-based band ``index`` as read (scaled, float32); inf if none."""
        _, _, b = self._bands[index - 1]
        if b.saturation is None:
            return float("inf")
        return float(np.float32(b.saturation) * np.float32(b.scale) + np.float32(b.offset))

    def map_channels(self, channels: Sequence[str], *,
                     bands: Optional[Sequence[int]] = None) -> BandMapping:
        """Find the model's input channels among the scene's bands.

        Parameters
        ----------
        channels : sequence of str
            Channel names the model needs, in order.
        bands : sequence of int, optional
            Explicit 1-based band indexes, one per channel.

        Returns
        -------
        BandMapping

        Raises
        ------
        BandMismatchError
            If a channel is missing: named bands lack it, or unnamed bands are
            fewer than (or not as many as) the channels. The message lists what
            the scene has and names the fix (``--bands``).
        """
        need = len(channels)
        wanted = ", ".join(channels)
        if bands is not None:
            bands = tuple(int(b) for b in bands)
            if len(bands) != need:
                raise BandMismatchError(
                    f"--bands gives {len(bands)} band(s) {list(bands)} but the model needs "
                    f"{need} channels ({wanted})"
                )
            bad = [b for b in bands if not 1 <= b <= self.count]
            if bad:
                raise BandMismatchError(
                    f"band index(es) {bad} out of range: {self.path!r} has bands 1..{self.count}"
                )
            return BandMapping(bands, "explicit")
        lookup = self.band_lookup()
        if all(c.lower() in lookup for c in channels):
            return BandMapping(tuple(lookup[c.lower()] for c in channels), "names")
        if self.count == need and not any(c.lower() in lookup for c in channels):
            notice(log, "bands %s of %s carry no names: used by position as %s (pass --bands to choose others)",
                   ", ".join(str(i) for i in range(1, need + 1)), os.path.basename(self.path), wanted)
            return BandMapping(tuple(range(1, need + 1)), "position")
        missing = [c for c in channels if c.lower() not in lookup]
        raise BandMismatchError(
            f"the model needs {need} channels ({wanted}) but {self.path!r} has "
            f"{self.count} band(s): {self.describe_bands()}; missing {', '.join(missing)}. "
            "Pass --bands with one 1-based band index per channel, or use a model for these bands"
        )

    def close(self) -> None:
        """Close every file of the scene."""
        for ds in self._datasets.values():
            ds.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open(path: str) -> rasterio.io.DatasetReader:
    if is_url(path):
        configure_gdal()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        if is_url(path):  # missing, refused or unreachable, said as such (rasterio's text names /vsicurl/ ...)
            raise (explain(path, str(exc)) or SceneReadError(
                f"cannot open {redact(path)} as a raster: {redact_text(str(exc))}; pass a GeoTIFF (a COG reads "
                "fastest) or "
                "another format GDAL reads")) from None
        raise SceneReadError(
            f"cannot open {path!r} as a raster: {exc}; pass a GeoTIFF, JPEG, PNG or another format GDAL reads"
        ) from None
    if ds.count < 1:
        ds.close()
        raise SceneReadError(f"{path!r} has no raster bands")
    return ds


def _raster_layout(path: str) -> Layout:
    ds = _open(path)
    try:
        names = []
        for desc, ci in zip(ds.descriptions, ds.colorinterp):
            names.append(desc.strip().lower() if desc else _COLOR_NAMES.get(ci))
        bands = tuple(Band(n, path, i) for i, n in enumerate(names, start=1))
    finally:
        ds.close()
    return Layout("raster", (BandGroup("scene", bands, register=False),), "scene")


def open_scene(path: Union[str, os.PathLike], *, reference: Optional[str] = None) -> Scene:
    """Open a scene: a raster, a scene manifest (``.toml``), a STAC Item or a sensor folder; local or remote.

    A raster without georeferencing (a plain JPEG or PNG) opens without a
    warning; its output is then not georeferenced either. A URL
    (``https://``, ``s3://``, ``gs://``, ``az://``, ``/vsi...``) is read by
    GDAL over HTTP range requests with the settings of
    :func:`tiler.storage.configure_gdal`; credentials come from the
    environment (``AWS_*``, ``GDAL_HTTP_*``).

    Parameters
    ----------
    path : path-like
        Any raster rasterio can open, local or at a URL; a scene manifest (see
        :func:`tiler.scene.read_manifest`); a STAC Item (``item.json``,
        or ``collection.json#ITEM_ID``, local or at a URL, whose asset hrefs may
        be URLs; see :func:`tiler.scene.read_stac_item`); or a local folder of Sentinel-2,
        Landsat-8/9 or WorldView-3 band files (see
        :func:`tiler.scene.detect_layout`).
    reference : str, optional
        Band group whose grid is the reference grid; default the manifest's
        ``reference``, else the finest group.

    Returns
    -------
    Scene
        Also a context manager that closes the files.

    Raises
    ------
    SceneReadError
        If the path is missing, not a raster or recognised layout, a manifest
        is wrong, a group's files are not on one grid, or groups are in
        different CRSs.
    StorageAccessError
        A remote server refused access: the message names the variables to set (exit code 2).
    StorageUnavailableError
        A remote server did not answer, or answered with a server error, after GDAL's retries (exit code 1).
    """
    path = os.fspath(path)
    if is_url(split_scene(path)[0]):
        configure_gdal()
        if is_stac(path):
            return Scene(path, read_stac_item(path), reference)
        if path.lower().endswith(".toml"):
            return Scene(path, read_manifest(path), reference)
        return Scene(path, _raster_layout(path), reference)
    if is_stac(path):
        if not os.path.exists(split_scene(path)[0]):
            raise SceneReadError(f"scene {split_scene(path)[0]!r} does not exist; check the path")
        return Scene(path, read_stac_item(path), reference)
    if not os.path.exists(path):
        raise SceneReadError(f"scene {path!r} does not exist; check the path")
    if os.path.isdir(path):
        layout = detect_layout(path)
    elif path.lower().endswith(".toml"):
        layout = read_manifest(path)
    else:
        layout = _raster_layout(path)
    return Scene(path, layout, reference)
