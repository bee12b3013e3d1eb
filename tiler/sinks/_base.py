"""The sink protocol, the description of the output grid, and feeding blocks to sinks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from tiler.destination import disk_failure
from tiler.engine import Block
from tiler.errors import in_stage
from tiler.labels import LabelScheme

__all__ = ["OutputContext", "Sink", "feed", "not_georeferenced_note"]


@dataclass(frozen=True)
class OutputContext:
    """What every sink of a run needs to know of the output before the first block.

    Parameters
    ----------
    width, height : int
        The reference grid in pixels.
    crs : rasterio.crs.CRS or None
        Its CRS (None: not georeferenced).
    transform : affine.Affine or None
        Its transform (None: not georeferenced; pixel coordinates are used).
    band_names : tuple of str
        Names of the values' bands: class names for predictions, index names
        for ``tiler indices``.
    labels : LabelScheme, optional
        The model's classes and colours (class-map and polygon sinks).
    tags : mapping of str to str
        Dataset metadata every raster product carries (version, model, options).
    source : str, optional
        Identifier of the scene (file stem), e.g. the ``image_id`` of a WKT CSV.
    row_offset : int, default 0
        Scene row of the product's first row: a part file of a distributed run
        holds rows ``[row_offset, row_offset + height)`` of the scene (see
        :meth:`rows`); blocks keep scene rows.
    gcps : tuple of (list of rasterio.control.GroundControlPoint, CRS), optional
        Ground control points of a scene georeferenced by them alone (no
        transform), with their CRS: written on every raster product, and
        polygons are placed by GDAL's GCP transformer (a first-order
        polynomial fit).
    rpcs : rasterio.rpc.RPC, optional
        Rational polynomial coefficients of a scene georeferenced by them alone:
        written on every raster product; polygons are placed by GDAL's RPC
        transformer at the RPCs' mean height (``HEIGHT_OFF``), in WGS 84
        longitude/latitude.
    """

    width: int
    height: int
    crs: Optional[CRS]
    transform: Optional[Affine]
    band_names: tuple[str, ...]
    labels: Optional[LabelScheme] = None
    tags: Mapping[str, str] = field(default_factory=dict)
    source: Optional[str] = None
    row_offset: int = 0
    gcps: Optional[tuple] = None
    rpcs: Optional[object] = None

    def rows(self, start: int, stop: int) -> "OutputContext":
        """The context of rows ``[start, stop)`` of this grid (a part file): same width and bands,
        the transform moved down by ``start`` rows.

        Raises
        ------
        ValueError
            If the rows are not inside the grid.
        """
        if not 0 <= start < stop <= self.height:
            raise ValueError(f"rows [{start}, {stop}) are not inside a grid of {self.height} rows")
        transform = self.transform @ Affine.translation(0, start) if self.transform is not None else None
        # A part file is an intermediate: the assembled product carries the scene's GCPs or RPCs.
        return replace(self, height=stop - start, transform=transform, row_offset=self.row_offset + start,
                       gcps=None, rpcs=None)

    @property
    def georeferenced(self) -> bool:
        """Whether the grid has a CRS and transform."""
        return self.crs is not None and self.transform is not None

    @property
    def geolocated(self) -> bool:
        """Whether the grid is placed on the Earth at all: by a transform, GCPs or RPCs."""
        return self.georeferenced or bool(self.gcps) or self.rpcs is not None

    @property
    def vector_crs(self) -> Optional[CRS]:
        """The CRS of polygons: the grid's, the GCPs', WGS 84 for RPCs; None in pixel coordinates."""
        if self.georeferenced:
            return self.crs
        if self.gcps:
            return self.gcps[1]
        if self.rpcs is not None:
            return CRS.from_epsg(4326)
        return None

    def pixel_to_crs(self, xy: np.ndarray) -> np.ndarray:
        """Map pixel coordinates to :attr:`vector_crs` coordinates.

        Parameters
        ----------
        xy : ndarray of shape (n, 2), float64
            Column, row of points in pixels (the corner of pixel ``(0, 0)`` is
            ``(0, 0)``).

        Returns
        -------
        ndarray of shape (n, 2), float64
            x, y in the CRS (easting/northing, or longitude/latitude); the
            input itself where the grid is not geolocated.
        """
        if self.georeferenced:
            t = self.transform
            return np.column_stack([t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f])
        if not self.geolocated or not len(xy):
            return xy
        from rasterio.transform import GCPTransformer, RPCTransformer

        rows = xy[:, 1] + self.row_offset
        if self.gcps:
            transformer = GCPTransformer(self.gcps[0])
        else:
            transformer = RPCTransformer(self.rpcs, RPC_HEIGHT=float(self.rpcs.height_off))
        with transformer as t:
            xs, ys = t.xy(rows, xy[:, 0], offset="ul")
        return np.column_stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)])

    def profile(self) -> dict:
        """The rasterio profile keys of the grid: ``width``, ``height`` and, where georeferenced,
        ``crs`` and ``transform``; or the ``gcps`` (with their ``crs``) and ``rpcs``."""
        p = {"width": self.width, "height": self.height}
        if self.georeferenced:
            p.update(crs=self.crs, transform=self.transform)
        else:
            if self.gcps:
                p.update(gcps=list(self.gcps[0]), crs=self.gcps[1])
            if self.rpcs is not None:
                p.update(rpcs=self.rpcs)
        return p


@runtime_checkable
class Sink(Protocol):
    """A product written from finished blocks.

    ``open(context)`` once, ``write(block)`` for every block (column band by
    column band, strips top to bottom; every output pixel once), then
    ``commit()`` to finish, verify and rename into place, or ``abort()`` to
    remove everything written. A sink never sees the engine's accumulator.
    """

    def open(self, context: OutputContext) -> None: ...

    def write(self, block: Block) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


def feed(blocks: Iterable[Block], sinks: Sequence[Sink], context: OutputContext, *,
         seconds: Optional[dict] = None) -> None:
    """Open every sink, write every block to each, then commit them in order.

    Parameters
    ----------
    blocks : iterable of Block
        The finished blocks (the engine's :func:`tiler.engine.stream`, or a
        loop over a raster).
    sinks : sequence of Sink
    context : OutputContext
    seconds : dict, optional
        ``seconds["write"]`` gets the time spent in the sinks.

    Raises
    ------
    DiskFullError
        Whatever was raised, where the disk (or the file-size limit) of an
        unfinished product was full at that moment (:func:`tiler.destination.disk_failure`).
    Exception
        Whatever a sink or the blocks raise; then every sink not yet committed
        is aborted (nothing half-written is left), and the error propagates.
    """
    seconds = seconds if seconds is not None else {}
    seconds.setdefault("write", 0.0)
    opened: list[Sink] = []
    committed = 0
    stages = [f"writing {_product_name(s)}" for s in sinks]
    current: Optional[Sink] = None  # the sink being called: the first suspect of a full disk
    try:
        for s, where in zip(sinks, stages):
            opened.append(s)
            current = s
            with in_stage(where):
                s.open(context)
        current = None
        for block in blocks:
            t, blend = time.perf_counter(), seconds.get("blend", 0.0)
            for s, where in zip(sinks, stages):
                current = s
                with in_stage(where):
                    s.write(block)
            current = None
            # A block's class map or values are computed on first use and counted as blending.
            seconds["write"] += time.perf_counter() - t - (seconds.get("blend", 0.0) - blend)
        t = time.perf_counter()
        for s, where in zip(sinks, stages):
            current = s
            with in_stage(where):
                s.commit()
            committed += 1
        seconds["write"] += time.perf_counter() - t
    except BaseException as exc:
        # Classify while the temporaries still fill the disk: a full disk shows up as a failed *read*
        # (GDAL flushing the output's dirty blocks from its cache) or a database error as often as a
        # failed write; every product's failure is named once here.
        suspects = ([current] if current is not None else []) + [s for s in opened[committed:] if s is not current]
        failure = disk_failure(exc, [getattr(s, "destination", None) for s in suspects])
        for s in opened[committed:]:
            s.abort()
        if failure is not None:
            raise failure from None
        raise


def _product_name(sink) -> str:
    """How a failure message names a sink's product: ``the polygons /out/m.gpkg``, ``/out/mask.tif``."""
    dest = getattr(sink, "destination", None)
    path = dest.location if dest is not None else type(sink).__name__
    return f"the polygons {path}" if getattr(sink, "product", None) == "polygons" else path


def not_georeferenced_note(path: str) -> str:
    """The one line that says a scene's products are in pixel coordinates."""
    return (f"{path!r} has no georeferencing (no CRS, transform, GCPs or RPCs): the outputs are in pixel "
            "coordinates (x = column, y = row from the top-left corner; areas in pixels), and GeoJSON, which "
            "is always longitude/latitude, cannot hold them")
