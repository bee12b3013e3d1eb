"""Opening a scene: its files, band groups and reference grid, its georeferencing, its bands' names.

A scene is one raster, a folder in a recognised sensor layout, or a scene
manifest (TOML). It has one or more band groups, each on its own pixel grid;
one of them (the reference group) defines the reference grid that the whole
pipeline works on. Reading a window of the reference grid reads every other
group through a resampling onto that grid (:class:`tiler.scene._reads.SceneReads`,
which :class:`Scene` inherits); where each group lies is :mod:`tiler.scene._geometry`.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import replace
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler._logging import notice
from tiler.errors import BandMismatchError, SceneReadError
from tiler.scene._bands import Band, BandGroup
from tiler.scene._geometry import BandMapping, GroupGrid, _affine_scale, check_bounds
from tiler.scene._layouts import Layout, detect_layout
from tiler.scene._manifest import read_manifest
from tiler.scene._reads import SceneReads
from tiler.scene._stac import is_stac, read_stac_item, split_scene
from tiler.storage import configure_gdal, explain, is_url, redact, redact_text

__all__ = ["Scene", "open_scene"]

log = logging.getLogger(__name__)

_COLOR_NAMES = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.alpha: "alpha",
}


class Scene(SceneReads):
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
