"""The reports of a run: frozen dataclasses with ``to_dict`` for ``--report``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional

from tiler._version import __version__
from tiler.storage import redact

__all__ = ["RunReport", "IndexReport", "scene_summary", "vector_summary"]


@dataclass(frozen=True)
class RunReport:
    """The summary of a :func:`run_scene` run (``--report run.json``).

    Attributes
    ----------
    scene : dict
        Path, size, bands, CRS, transform, band mapping, kind, reference group, notes.
    registration : dict or None
        Per band group: shift, model, windows, residual (None: nothing to register).
    domain : dict or None
        The input-domain verdict (None: the model records no training domain).
    out : str or None
        The raster written (None: polygons only).
    vector : dict or None
        The polygons written: path, format, features per class, units of area
        and perimeter, regions dropped by ``min_area``.
    model : dict
        Path, channels, classes, the runtime that executed it (``keras``,
        ``openvino``; None when no patch was predicted) and its precision.
    grid : dict
        Patch size, stride, overlap, patch rows and columns, strips, column bands.
    patches : dict
        On the grid, predicted, skipped (no valid pixel).
    seconds : dict
        Per stage: register, read, predict, blend, write, total; a run in parts also ``assembly`` and its
        ``assembly_vector`` (joining the polygons the seams cut, copying the rest) and ``assembly_raster``
        (copying the parts' rasters into the product).
    megapixels_per_second : float
    peak_rss_mb : float
        Peak resident memory of the process, MB.
    options : dict
        The config values: ``inference``, ``streaming``, ``output``, ``vector``
        (each its ``to_dict()``).
    parts : dict or None
        A run in parts (:mod:`tiler.distributed`): ``total``, ``computed``,
        ``reused`` (finished by an earlier, interrupted run), the workers, the
        assembly seconds, and per part its rows, seconds and worker. None: one
        stream in this process.
    network_busy : float or None
        Fraction of the run's wall time spent in the network stage
        (``seconds["predict"] / seconds["total"]``); None for a run in parts.
    processing_grid : dict or None
        The grid the engine ran on (:meth:`tiler.scene.ProcessingGrid.to_dict`: pixel size in the CRS's
        units, width, height, resampling, the reason) and ``output``: ``scene`` or ``model``, the grid of the
        products.
    tiler_version : str
    """

    scene: dict
    registration: Optional[dict]
    domain: Optional[dict]
    out: Optional[str]
    vector: Optional[dict]
    model: dict
    grid: dict
    patches: dict
    seconds: dict
    megapixels_per_second: float
    peak_rss_mb: float
    options: dict
    parts: Optional[dict] = None
    network_busy: Optional[float] = None
    processing_grid: Optional[dict] = None
    tiler_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class IndexReport:
    """The summary of an :func:`index_scene` run.

    Attributes
    ----------
    scene : dict
    out : str
    indices : dict
        Per index: formula, parameters, bounds, reference.
    radiometry : dict
        Per input band: group, scale, offset, saturation DN.
    registration : dict or None
    seconds : dict
        register, read, compute, write, total.
    options : dict
    tiler_version : str
    """

    scene: dict
    out: str
    indices: dict
    radiometry: dict
    registration: Optional[dict]
    seconds: dict
    options: dict
    tiler_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def scene_summary(sc, plan, path) -> dict:
    """The report entry of a scene: path, size, bands, CRS, transform, band mapping, kind, notes."""
    return {"path": redact(os.fspath(path)), "width": sc.width, "height": sc.height, "bands": sc.count,
            "crs": sc.crs.to_string() if sc.crs else None,
            "transform": list(sc.transform)[:6] if sc.georeferenced else None,
            "band_mapping": {"indexes": list(plan.indexes), "method": plan.method,
                             "index_channels": list(plan.index_channels)},
            "kind": sc.kind, "reference": sc.reference, "notes": list(sc.notes)}


def vector_summary(sink) -> Optional[dict]:
    """The report entry of a :class:`tiler.sinks.PolygonSink` (None without one)."""
    if sink is None:
        return None
    return {"path": sink.destination.location, "format": sink.format, "features": dict(sink.counts),
            "units": {"area": "m2" if sink.units == "m" else "px2", "perimeter": sink.units},
            "dropped_small": sink.dropped_small}
