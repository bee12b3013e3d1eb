"""The polygon sink: regions of a class map, in the scene's CRS, in a GIS vector format.

Regions come from :class:`tiler.sinks._polygonize.Polygonizer` (streamed,
merged across block seams) as they complete and are appended to a GeoPackage
beside the destination; at commit that file is converted to the destination's
format (GeoJSON, FlatGeobuf, GeoParquet, or the submission-style WKT CSV) chunk
by chunk and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import numpy as np
import shapely

from tiler.config import VectorConfig
from tiler.destination import Destination
from tiler.engine import Block
from tiler.errors import OutputVerificationError, UsageError
from tiler.labels import BACKGROUND_NAMES
from tiler.output import CLASS_NODATA
from tiler.sinks._base import OutputContext
from tiler.sinks._polygonize import Polygonizer, Region

__all__ = ["PolygonSink", "PartPolygonSink", "VECTOR_FORMATS", "vector_format", "export_classes", "save_pieces",
           "load_pieces"]

log = logging.getLogger(__name__)

#: Vector formats by file extension: OGR driver name (through pyogrio), or
#: ``WKT-CSV`` for the submission-style CSV (``image_id,class,multipolygon_wkt``).
VECTOR_FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".fgb": "FlatGeobuf", ".parquet": "Parquet",
                  ".csv": "WKT-CSV"}
#: Features written per call to the file (bounds the finished features held).
_FLUSH_FEATURES = 5000
#: Features read per chunk when converting the intermediate GeoPackage.
_CHUNK = 20000
#: Layer name of the written polygons.
LAYER = "polygons"


#: The attribute fields of every polygon layer.
FIELDS = ("class", "class_index", "area", "perimeter", "pixels", "mean_probability")


def _empty_fields() -> list:
    return [np.empty(0, object), np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.float64),
            np.empty(0, np.int64), np.empty(0, np.float64)]


@contextmanager
def _no_crs_warning():
    """A scene without georeferencing has no CRS, on purpose: pyogrio's warning about it would only alarm."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*crs.*was not provided", category=UserWarning)
        yield


def _write_layer(path: str, wkb, fields: Sequence[np.ndarray], *, driver: str, crs: Optional[str],
                 append: bool, spatial_index: bool = True) -> None:
    """Write (or append) MultiPolygon features to the polygon layer of ``path`` with pyogrio.

    ``spatial_index=False`` skips the GeoPackage R-tree (for an intermediate file).
    GeoJSON is written as RFC 7946 requires (``RFC7946=YES``: no ``crs``
    member, WGS 84 longitude/latitude; the caller reprojects).
    """
    import pyogrio.raw

    options = None
    if driver == "GPKG" and not spatial_index:
        options = {"SPATIAL_INDEX": "NO"}
    elif driver == "GeoJSON" and not append:
        options = {"RFC7946": "YES"}
    with _no_crs_warning():
        pyogrio.raw.write(path, wkb, list(fields), list(FIELDS), layer=LAYER, driver=driver,
                          geometry_type="MultiPolygon", promote_to_multi=True, crs=crs, append=append,
                          layer_options=options)


def _copy_layer(src: str, dst: str, *, crs: Optional[str], append: bool, spatial_index: bool) -> int:
    """Copy the polygon layer of the GeoPackage ``src`` into (or onto the end of) the GeoPackage ``dst`` as one
    Arrow stream (GDAL's columnar API through pyogrio: no per-feature Python objects), its fields and geometries
    as they are; return the features copied. Four times the speed of reading and writing NumPy chunks
    (200,000 features: 0.59 s against 2.37 s on this project's CPU machine)."""
    import pyogrio
    import pyogrio.raw

    n = int(pyogrio.read_info(src, layer=LAYER)["features"])
    if n == 0:
        return 0  # nothing to copy (and no empty layer to create before the first part with features)
    with pyogrio.raw.open_arrow(src, layer=LAYER) as (meta, stream), _no_crs_warning():
        pyogrio.raw.write_arrow(stream, dst, layer=LAYER, driver="GPKG", geometry_name=meta["geometry_name"] or "geom",
                                geometry_type="MultiPolygon", crs=crs, append=append,
                                layer_options=None if spatial_index else {"SPATIAL_INDEX": "NO"})
    return n


def _geodesic(geoms: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic area (m²) and perimeter (m) of polygons in a geographic CRS, on its ellipsoid.

    References
    ----------
    Karney (2013), "Algorithms for geodesics", J. Geodesy 87, doi:10.1007/s00190-012-0578-z, as
    implemented by PROJ's ``geod`` (:meth:`pyproj.Geod.geometry_area_perimeter`).
    """
    import pyproj

    geod = pyproj.CRS.from_wkt(crs.to_wkt()).get_geod()
    area = np.empty(len(geoms), np.float64)
    perimeter = np.empty(len(geoms), np.float64)
    for k, g in enumerate(geoms):
        a, p = geod.geometry_area_perimeter(g)
        area[k], perimeter[k] = abs(a), p
    return area, perimeter


def vector_format(path: str) -> str:
    """The vector format of a path by its extension (:data:`VECTOR_FORMATS`).

    Raises
    ------
    UsageError
        For an unknown extension, or GeoParquet where neither GDAL's Parquet
        driver nor pyarrow is available.
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    fmt = VECTOR_FORMATS.get(ext)
    if fmt is None:
        raise UsageError(f"cannot tell the vector format of {os.fspath(path)!r}; use one of "
                         f"{', '.join(VECTOR_FORMATS)} (GeoPackage, GeoJSON, FlatGeobuf, GeoParquet, WKT CSV)")
    if fmt == "Parquet" and not _parquet_driver():
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(f"{os.fspath(path)!r}: GeoParquet needs pyarrow (pip install "
                             "\"satellite-tiler[parquet]\") or a GDAL with the Parquet driver; or write .gpkg or "
                             ".fgb") from None
    return fmt


def _parquet_driver() -> bool:
    import pyogrio

    return "Parquet" in pyogrio.list_drivers(write=True)


def export_classes(names: Sequence[str], wanted: Optional[Sequence[str]]) -> tuple[int, ...]:
    """Indices of the classes to export.

    Parameters
    ----------
    names : sequence of str
        The model's class names.
    wanted : sequence of str, optional
        ``--classes``; default all but a background class
        (:data:`tiler.labels.BACKGROUND_NAMES`), or all where the model names none.

    Raises
    ------
    UsageError
        For a name the model does not have.
    """
    lower = [n.lower() for n in names]
    if wanted is None:
        keep = tuple(i for i, n in enumerate(lower) if n not in BACKGROUND_NAMES)
        return keep or tuple(range(len(names)))
    out = []
    for w in wanted:
        if w.lower() not in lower:
            raise UsageError(f"--classes: the model has no class {w!r}; its classes: {', '.join(names)}")
        out.append(lower.index(w.lower()))
    return tuple(sorted(set(out)))


class PolygonSink:
    """Polygons per class of the class map (``--vector``), streamed and merged across seams.

    One feature per connected region of an exported class, in the scene's CRS
    (the GCPs' CRS where the scene is placed by GCPs, WGS 84 for RPCs; pixel
    coordinates where it is not georeferenced at all; WGS 84
    longitude/latitude in GeoJSON, as RFC 7946 requires), with attributes
    ``class`` (name), ``class_index``, ``area`` (m² where the CRS is
    projected; geodesic m² on the CRS's ellipsoid where it is geographic;
    else pixels) and ``perimeter`` (metres, else pixels), both of
    the exact pixel region (before any simplification), ``pixels`` and
    ``mean_probability`` (the mean over its pixels of the probability of its
    class, computed in the same pass; NaN where there are no probabilities,
    e.g. vectorising a bare class map). Written
    to a GeoPackage beside the destination as regions complete, converted to
    the destination's format (by extension, :data:`VECTOR_FORMATS`) at
    commit, renamed into place.

    Parameters
    ----------
    destination : Destination
        A guarded destination.
    config : VectorConfig, optional
        Classes, connectivity, minimum area, simplification.

    Notes
    -----
    ``simplify`` uses GEOS coverage simplification
    (:func:`shapely.coverage_simplify`), which needs the whole coverage at
    once: with it, the finished regions (not the raster) are held until the
    end.
    """

    product = "polygons"

    def __init__(self, destination: Destination, config: Optional[VectorConfig] = None) -> None:
        self.destination = destination
        self.config = config or VectorConfig()
        self.format = vector_format(destination.path)
        self._features = 0
        self._spatial_index = self.format == "GPKG"
        self._held_rows: tuple[int, ...] = ()  # rows whose seam stays open (a part's first row)
        self._pending: list[tuple[int, shapely.Geometry]] = []
        self._work: Optional[str] = None
        self.counts: dict[str, int] = {}
        self.dropped_small = 0
        self.dropped_weak = 0

    def open(self, context: OutputContext) -> None:
        """Choose the classes, the units, and the intermediate file.

        Raises
        ------
        UsageError
            For a class name the model does not have.
        """
        self.context = context
        names = context.labels.names if context.labels is not None else context.band_names
        self.names = tuple(names)
        self.classes = export_classes(self.names, self.config.classes)
        self.counts = {self.names[i]: 0 for i in self.classes}
        self.poly = Polygonizer(context.height, context.width, self.classes,
                                connectivity=self.config.connectivity, held_rows=self._held_rows)
        crs = context.vector_crs
        if self.format == "GeoJSON" and crs is None:
            raise UsageError(f"{self.destination.path!r}: GeoJSON coordinates are WGS 84 longitude/latitude "
                             "(RFC 7946), but the scene has no georeferencing (no CRS, transform, GCPs or RPCs); "
                             "write a GeoPackage (.gpkg) or FlatGeobuf (.fgb), which hold pixel coordinates")
        #: How area and perimeter are measured: "planar" in a projected CRS in metres, "geodesic" on the
        #: ellipsoid of a geographic CRS, else "pixel".
        if crs is not None and crs.is_geographic:
            self.measure = "geodesic"
        elif crs is not None and crs.is_projected and abs(crs.linear_units_factor[1] - 1) < 1e-12:
            self.measure = "planar"
        else:
            self.measure = "pixel"
        self.units = "px" if self.measure == "pixel" else "m"
        self.crs = crs
        self.crs_wkt = crs.to_wkt() if crs is not None else None
        self._work = (self.destination.temporary() if self.format == "GPKG"
                      else self.destination.scratch("features", ".gpkg"))

    def write(self, block: Block) -> None:
        """Polygonise a block; write the regions that are complete.

        Each region's ``mean_probability`` is the mean over its pixels of the
        probability of its class: from the block's probabilities where the
        engine made it (or a probability raster was given), else NaN.
        """
        class_map = block.class_map(CLASS_NODATA)
        probability = None
        if block.has_values:
            values = block.values()
            index = np.where(class_map < values.shape[0], class_map, 0).astype(np.intp)[None]
            probability = np.take_along_axis(values, index, axis=0)[0]
        done = self.poly.add(class_map, block.valid, block.rows, block.cols, probability)
        self._take(done)

    def _take(self, done: list) -> None:
        if not done:
            return
        self._pending.extend(done)
        if not self.config.simplify and len(self._pending) >= _FLUSH_FEATURES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        values = np.asarray([r.value for r in self._pending], np.int64)
        pixel = np.asarray([r.geometry for r in self._pending], dtype=object)
        pixels = np.asarray([r.pixels for r in self._pending], np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.asarray([r.probability_sum / r.pixels if r.pixels else np.nan for r in self._pending],
                                np.float64)
        self._pending = []
        geoms = shapely.transform(pixel, self.context.pixel_to_crs)
        if self.measure == "geodesic":
            area, perimeter = _geodesic(geoms, self.crs)
        else:
            area = shapely.area(geoms if self.measure == "planar" else pixel)
            perimeter = shapely.length(geoms if self.measure == "planar" else pixel)
        # A NaN area (a CRS whose geodesic area is undefined there) never filters a polygon silently.
        keep = ~(area < self.config.min_area)
        self.dropped_small += int((~keep).sum())
        if self.config.min_probability:
            weak = ~(mean_p >= self.config.min_probability)  # NaN (no probabilities) is kept: nothing to judge
            weak &= ~np.isnan(mean_p)
            self.dropped_weak += int((keep & weak).sum())
            keep &= ~weak
        if not keep.all():
            values, geoms, area, perimeter = values[keep], geoms[keep], area[keep], perimeter[keep]
            pixels, mean_p = pixels[keep], mean_p[keep]
        if self.config.simplify:  # area and perimeter stay those of the exact pixel regions
            geoms = shapely.coverage_simplify(geoms, self.config.simplify)
        if not len(geoms):
            return
        names = np.asarray([self.names[v] for v in values], dtype=object)
        for n in names:
            self.counts[n] += 1
        _write_layer(self._work, shapely.to_wkb(geoms),
                     [names, values.astype(np.int32), area.astype(np.float64), perimeter.astype(np.float64),
                      pixels, mean_p],
                     driver="GPKG", crs=self.crs_wkt, append=self._features > 0,
                     spatial_index=self._spatial_index)
        self._features += len(geoms)

    def absorb(self, features: str, pieces: dict[str, np.ndarray], summary: dict) -> None:
        """Take a part's finished polygons and the pieces of its regions open at its seams (a distributed run's
        assembly, :class:`PartPolygonSink`).

        The features are copied as they are (their geometry, area, perimeter, pixels and mean probability
        were computed by the part, as this sink computes them), as one Arrow stream (:func:`_copy_layer`); the
        pieces join the pieces of the other parts, and the regions they make are written at :meth:`commit`.

        Parameters
        ----------
        features : str
            The part's GeoPackage of finished polygons.
        pieces : dict of str to ndarray
            :func:`load_pieces` of the part's pieces file.
        summary : dict
            The part's ``counts``, ``dropped_small`` and ``dropped_weak``.
        """
        self._features += _copy_layer(features, self._work, crs=self.crs_wkt, append=self._features > 0,
                                      spatial_index=self._spatial_index)
        self.poly.import_open(pieces)
        for name, n in summary["counts"].items():
            self.counts[name] += int(n)
        self.dropped_small += int(summary["dropped_small"])
        self.dropped_weak += int(summary["dropped_weak"])

    def finish_pieces(self) -> None:
        """The regions the absorbed pieces make, written (after every part's :meth:`absorb`)."""
        self._take(self.poly.finish())

    def commit(self) -> None:
        """Write the last regions, convert to the destination's format, rename into place.

        Raises
        ------
        OutputVerificationError
            If regions were left open (blocks missing).
        DiskFullError, OutputExistsError
            As for every output; nothing is left.
        """
        try:
            if self.poly.open_count:
                raise OutputVerificationError(f"{self.poly.open_count} polygon(s) still open at a seam: "
                                              "blocks are missing")
            self._finish_layer()
            if self.format == "WKT-CSV":
                self._to_csv()
            elif self.format == "Parquet" and not _parquet_driver():
                self._to_parquet()
            elif self.format != "GPKG":
                self._convert()
            else:
                self.destination.adopt(self._work)
            self.destination.commit()
        except BaseException:
            self.abort()
            raise

    def _finish_layer(self) -> None:
        """Write the regions still pending; an empty layer where there were none."""
        self._flush()
        if self._features == 0:
            self._write_empty()

    def _write_empty(self) -> None:
        _write_layer(self._work, np.empty(0, object), _empty_fields(), driver="GPKG", crs=self.crs_wkt,
                     append=False)

    def _chunks(self, where: Optional[str] = None) -> Iterator[tuple]:
        """``(meta, WKB geometries, fields)`` of the intermediate file's polygon layer, ``_CHUNK`` features at a
        time."""
        import pyogrio.raw

        skip = 0
        while True:
            meta, _, geoms, fields = pyogrio.raw.read(self._work, layer=LAYER, skip_features=skip,
                                                      max_features=_CHUNK, where=where)
            if len(geoms) == 0:
                return
            yield meta, geoms, fields
            skip += len(geoms)
            if len(geoms) < _CHUNK:
                return

    def _convert(self) -> None:
        """Copy the intermediate GeoPackage into the destination's format, chunk by chunk
        (GeoJSON reprojected to WGS 84 longitude/latitude, RFC 7946 section 4)."""
        tmp = self.destination.temporary()
        crs, to_wgs84 = self.crs_wkt, None
        if self.format == "GeoJSON" and not (self.crs.to_epsg() == 4326):
            import pyproj

            transformer = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(self.crs_wkt), "EPSG:4326",
                                                      always_xy=True)

            def to_wgs84(xy: np.ndarray) -> np.ndarray:
                return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

        if self.format == "GeoJSON":
            crs = "EPSG:4326"
        first = True
        for _, geoms, fields in self._chunks():
            if to_wgs84 is not None:
                geoms = shapely.to_wkb(shapely.transform(shapely.from_wkb(geoms), to_wgs84))
            _write_layer(tmp, geoms, fields, driver=self.format, crs=crs, append=not first)
            first = False
        if first:  # no feature: an empty layer
            _write_layer(tmp, np.empty(0, object), _empty_fields(), driver=self.format, crs=crs, append=False)

    def _to_csv(self) -> None:
        """The submission-style CSV: one row per exported class, its regions as one MultiPolygon WKT."""
        tmp = self.destination.temporary()
        image_id = self.context.source or ""
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "class", "multipolygon_wkt"])
            for i in self.classes:
                parts = io.StringIO()
                n = 0
                for _, geoms, _ in self._chunks(where=f"class_index = {int(i)}"):
                    for g in shapely.from_wkb(geoms):
                        for poly in shapely.get_parts(g):
                            parts.write(", " if n else "")
                            parts.write(shapely.to_wkt(poly, rounding_precision=-1)[len("POLYGON "):])
                            n += 1
                wkt = f"MULTIPOLYGON ({parts.getvalue()})" if n else "MULTIPOLYGON EMPTY"
                w.writerow([image_id, self.names[i], wkt])

    def _to_parquet(self) -> None:
        """GeoParquet 1.1 through pyarrow, chunk by chunk (where GDAL has no Parquet driver).

        The ``geo`` metadata (WKB encoding, PROJJSON CRS, bounding box) follows
        the GeoParquet 1.1 specification, https://geoparquet.org/releases/v1.1.0/.
        """

        import pyarrow as pa
        import pyarrow.parquet as pq
        import pyogrio

        tmp = self.destination.temporary()
        crs = self.crs
        column = {"encoding": "WKB", "geometry_types": ["MultiPolygon"]}
        if crs is not None:
            column["crs"] = crs.to_dict(projjson=True)
        bbox = pyogrio.read_info(self._work, layer=LAYER, force_total_bounds=True)["total_bounds"]
        if bbox is not None and np.isfinite(bbox).all():
            column["bbox"] = [float(v) for v in bbox]
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
        schema = pa.schema([("class", pa.string()), ("class_index", pa.int32()), ("area", pa.float64()),
                            ("perimeter", pa.float64()), ("pixels", pa.int64()), ("mean_probability", pa.float64()),
                            ("geometry", pa.binary())],
                           metadata={"geo": json.dumps(geo)})
        with pq.ParquetWriter(tmp, schema) as out:
            for _, geoms, fields in self._chunks():
                out.write_table(pa.table([pa.array(fields[0], pa.string()), pa.array(fields[1], pa.int32()),
                                          pa.array(fields[2], pa.float64()), pa.array(fields[3], pa.float64()),
                                          pa.array(fields[4], pa.int64()), pa.array(fields[5], pa.float64()),
                                          pa.array(list(geoms), pa.binary())], schema=schema))

    def abort(self) -> None:
        """Remove the intermediate and temporary files."""
        self._pending = []
        self.destination.discard()


class PartPolygonSink(PolygonSink):
    """The polygons of one part of a distributed run: its finished regions as final features, the pieces of
    the regions cut by its seams kept for the assembly.

    Where a region touches no seam of the part (its first row, where the part above ends, and its last) it is
    final when the part is: written as :class:`PolygonSink` writes it, to a GeoPackage in the work folder,
    geometry and attributes computed here, on the worker. The pieces of the regions that touch a seam go to
    a pieces file (:func:`save_pieces`); the assembly (:meth:`PolygonSink.absorb`) copies the features and
    joins the pieces. Nothing of the probabilities is kept: the part's temporary disk is its polygons.

    Parameters
    ----------
    destination : Destination
        The part's features GeoPackage (an intermediate in the work folder).
    config : VectorConfig
    scene : OutputContext
        The whole scene's context (the blocks carry scene rows).
    rows : tuple of int
        The part's ``(start, stop)`` output rows.
    pieces : str
        Path of the pieces file written at :meth:`commit`.

    Notes
    -----
    With ``simplify`` (a coverage simplification, which needs the whole coverage) every region goes to the
    pieces file, and the assembly simplifies them together.
    """

    def __init__(self, destination: Destination, config: VectorConfig, scene: OutputContext,
                 rows: tuple[int, int], pieces: str) -> None:
        super().__init__(destination, config)
        self.scene, self.part_rows, self.pieces = scene, rows, pieces
        self._held: list[Region] = []
        self._held_rows = (rows[0],)
        self._spatial_index = False  # an intermediate: the assembly copies its features

    def open(self, context: OutputContext) -> None:
        """Open on the whole scene's grid (``context``, the part's rows, is not used), the part's first row
        held open."""
        super().open(self.scene)

    def _take(self, done: list) -> None:
        if self.config.simplify:  # simplified at the assembly, with every other region
            self._held.extend(done)
            return
        super()._take(done)

    def commit(self) -> None:
        """Write the last finished polygons and the open pieces; keep both in the work folder.

        Raises
        ------
        OutputVerificationError
            If rows of the part were never polygonised.
        """
        try:
            self._take(self.poly.flush())
            pieces = self.poly.export_open()
            if self._held:
                pieces = _concat_pieces(pieces, _regions_as_pieces(self._held, self.scene))
            save_pieces(self.pieces, pieces)
            self._finish_layer()
            self.destination.adopt(self._work)
            self.destination.commit()
        except BaseException:
            self.abort()
            raise

    def summary(self) -> dict:
        """What the assembly adds up: ``counts`` per class, ``dropped_small``, ``dropped_weak``."""
        return {"counts": dict(self.counts), "dropped_small": self.dropped_small, "dropped_weak": self.dropped_weak}


def _regions_as_pieces(regions: list, scene: OutputContext) -> dict[str, np.ndarray]:
    """Finished regions as single-piece groups that touch no seam (kept whole for a coverage simplification)."""
    n = len(regions)
    empty = shapely.to_wkb(shapely.from_wkt("LINESTRING EMPTY"))
    return {"group": np.arange(n, dtype=np.int64) - n - 1,  # negative: never one of a polygoniser's own
            "value": np.asarray([r.value for r in regions], np.int64),
            "geometry": np.asarray(shapely.to_wkb(np.asarray([r.geometry for r in regions], dtype=object)),
                                   dtype=object),
            "edge": np.asarray([empty] * n, dtype=object),
            "pixels": np.asarray([r.pixels for r in regions], np.int64),
            "sum": np.asarray([r.probability_sum for r in regions], np.float64),
            "block": np.tile(np.asarray([0, scene.height, 0, scene.width], np.int64), (n, 1))}


def _concat_pieces(a: dict, b: dict) -> dict:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def save_pieces(path: str, pieces: dict[str, np.ndarray]) -> None:
    """Write :meth:`Polygonizer.export_open`'s pieces to an ``.npz`` file, WKB as one byte buffer with offsets
    (no pickling: the file is read back by another process)."""
    arrays = {}
    for key, value in pieces.items():
        if value.dtype == object:
            sizes = np.fromiter((len(b) for b in value), np.int64, len(value))
            arrays[f"{key}_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            arrays[f"{key}_bytes"] = np.frombuffer(b"".join(value), np.uint8)
        else:
            arrays[key] = value
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_pieces(path: str) -> dict[str, np.ndarray]:
    """Read :func:`save_pieces`'s file."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files if not k.endswith(("_offsets", "_bytes"))}
        for key in ("geometry", "edge"):
            offsets, data = z[f"{key}_offsets"], z[f"{key}_bytes"].tobytes()
            out[key] = np.asarray([data[a:b] for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)
    return out
