"""Polygons of a class-map GeoTIFF: ``tiler vectorize MASK --out OUT``.

The mask is read block by block (column bands of whole strips, the engine's
order) and fed to the same :class:`tiler.sinks.PolygonSink` as ``tiler run
--vector``: memory is bounded by one block and the regions open at its seams.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from typing import Any, Iterator, Optional, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from tiler._logging import notice
from tiler._version import __version__
from tiler.config import DEFAULT_BAND_WIDTH, DEFAULT_STRIP_ROWS, VectorConfig, split_options
from tiler.destination import Destination, guard_outputs
from tiler.engine import Block, ProgressCallback
from tiler.errors import SceneReadError, UsageError
from tiler.sinks import VECTOR_FORMATS, OutputContext, PolygonSink, feed, not_georeferenced_note
from tiler.storage import configure_gdal, explain, is_url, redact, redact_text

__all__ = ["vectorize_mask"]

log = logging.getLogger(__name__)


def _class_names(ds, path: str) -> tuple[tuple[str, ...], Optional[tuple[str, ...]]]:
    """Class names by value, and the classes to export by default.

    The ``TILER_CLASSES`` tag of a tiler class map names its classes (the
    default export is then :func:`tiler.sinks.export_classes`'s); else the
    values themselves are the names, and only the values present in the mask
    are exported (a 0/255 mask has two classes, not 256).
    """
    tag = ds.tags().get("TILER_CLASSES")
    if tag:
        return tuple(tag.split(",")), None
    kind = np.dtype(ds.dtypes[0]).kind
    if kind not in "ui" or np.dtype(ds.dtypes[0]).itemsize > 2:
        raise UsageError(f"{path!r} holds {ds.dtypes[0]} values; a class map has 8- or 16-bit integer classes")
    present: set[int] = set()
    for _, window in ds.block_windows(1):
        block = ds.read(1, window=window, masked=True)
        present.update(int(v) for v in np.unique(block.compressed()))
    top = max(present, default=0)
    return tuple(str(v) for v in range(top + 1)), tuple(str(v) for v in sorted(present))


def _open_probabilities(path, mask_ds):
    """Open a probability raster that matches the mask's grid, or refuse it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            probs = rasterio.open(os.fspath(path))
    except RasterioIOError as exc:
        raise SceneReadError(f"cannot read probabilities {os.fspath(path)!r}: {exc}") from None
    if (probs.width, probs.height) != (mask_ds.width, mask_ds.height) or probs.transform != mask_ds.transform:
        probs.close()
        raise UsageError(f"--probabilities {os.fspath(path)!r} is {probs.width}x{probs.height} on another grid than "
                         f"the mask ({mask_ds.width}x{mask_ds.height}); give the probabilities of the same run")
    return probs


def vectorize_mask(
    mask: Union[str, os.PathLike],
    out: Union[str, os.PathLike, Destination],
    *,
    polygons: Optional[VectorConfig] = None,
    overwrite: bool = False,
    strip_rows: int = DEFAULT_STRIP_ROWS,
    band_width: int = DEFAULT_BAND_WIDTH,
    progress: Optional[ProgressCallback] = None,
    probabilities: Union[None, str, os.PathLike] = None,
    **options: Any,
) -> dict[str, Any]:
    """Write the polygons of a class-map GeoTIFF, streamed block by block.

    Parameters
    ----------
    mask : path-like
        A single-band integer class map (``tiler run`` output, or any 8/16-bit
        label raster). Pixels that are nodata or masked are not polygonised.
        Class names come from its ``TILER_CLASSES`` tag, else the class values
        are the names (``--classes 1,3``) and, by default, the values present
        are exported.
    out : path-like or Destination
        Polygon file, format by extension (:data:`tiler.sinks.VECTOR_FORMATS`);
        guarded and written atomically.
    polygons : VectorConfig, optional
        Classes, connectivity, minimum area, simplification.
    overwrite : bool, default False
    strip_rows, band_width : int
        Block size of the reads, pixels (memory bound).
    progress : callable, optional
        ``progress(done, total)`` in blocks.
    probabilities : path-like, optional
        A probability GeoTIFF of the mask's grid, one band per class
        (``tiler run --output probability``: float32, or uint8 with its scale
        1/255): each polygon's ``mean_probability`` is the mean over its pixels
        of its class's band; without it, NaN.
    **options
        Fields of :class:`VectorConfig` by name.

    Returns
    -------
    dict
        Report: mask, out, format, features per class, units, seconds, options.

    Raises
    ------
    SceneReadError
        If the mask cannot be read (exit code 2).
    UsageError
        Not a single-band integer raster, an unknown class, a bad option or
        destination, a probability raster of another grid or with fewer bands
        than the classes (exit code 2); nothing is written.
    """

    t0 = time.perf_counter()
    (polygons,) = split_options(options, polygons or VectorConfig())
    if strip_rows < 1 or band_width < 1:
        raise UsageError(f"strip rows and band width must be >= 1, got {strip_rows} and {band_width}")
    path = os.fspath(mask)
    if is_url(path):
        configure_gdal()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise (explain(path, str(exc), "mask") if is_url(path) else None) or \
            SceneReadError(f"cannot read mask {redact(path)!r}: {redact_text(str(exc))}") from None
    seconds = {"read": 0.0, "write": 0.0}
    probs = _open_probabilities(probabilities, ds) if probabilities is not None else None
    with ds, probs or contextlib.nullcontext():
        if ds.count != 1:
            raise UsageError(f"{path!r} has {ds.count} bands; a class map has one (tiler run --output class)")
        names, present = _class_names(ds, path)
        if probs is not None and probs.count < len(names):
            raise UsageError(f"--probabilities has {probs.count} band(s) but the mask has {len(names)} classes "
                             f"({', '.join(names)}); give the probabilities of the run that wrote the mask")
        if polygons.classes is None and present is not None:
            polygons = dataclasses.replace(polygons, classes=present)
        georef = ds.crs is not None and not ds.transform.is_identity
        context = OutputContext(ds.width, ds.height, ds.crs if georef else None, ds.transform if georef else None,
                                names, tags={"TILER_VERSION": __version__},
                                source=os.path.splitext(os.path.basename(path))[0],
                                gcps=(tuple(ds.gcps[0]), ds.gcps[1]) if not georef and ds.gcps[0] and ds.gcps[1]
                                else None, rpcs=ds.rpcs if not georef else None)
        if not context.geolocated:
            notice(log, "%s", not_georeferenced_note(path))
        given = out if isinstance(out, Destination) else None
        guard = None if given else guard_outputs({"out": (out, tuple(VECTOR_FORMATS))}, inputs=[path],
                                                 overwrite=overwrite)
        with guard or contextlib.nullcontext():
            dest = given or guard["out"]
            sink = PolygonSink(dest, polygons)
            windows = [(r0, min(ds.height, r0 + strip_rows), c0, min(ds.width, c0 + band_width))
                       for c0 in range(0, ds.width, band_width) for r0 in range(0, ds.height, strip_rows)]

            def blocks() -> Iterator[Block]:
                for n, (r0, r1, c0, c1) in enumerate(windows, 1):
                    t = time.perf_counter()
                    w = Window(c0, r0, c1 - c0, r1 - r0)
                    classes = ds.read(1, window=w)
                    valid = ds.read_masks(1, window=w) > 0
                    values = None
                    if probs is not None:
                        values = probs.read(window=w).astype(np.float32) * np.asarray(
                            probs.scales, np.float32)[:, None, None]
                    seconds["read"] += time.perf_counter() - t
                    yield Block((r0, r1), (c0, c1), valid, class_map=classes, values=values)
                    if progress is not None:
                        progress(n, len(windows))

            feed(blocks(), [sink], context, seconds=seconds)
    seconds["total"] = time.perf_counter() - t0
    return {"tiler_version": __version__, "mask": redact(path), "out": dest.location, "format": sink.format,
            "features": dict(sink.counts), "dropped_small": sink.dropped_small,
            "units": {"area": "m2" if sink.units == "m" else "px2", "perimeter": sink.units},
            "seconds": {k: round(v, 4) for k, v in seconds.items()}, "options": polygons.to_dict()}
