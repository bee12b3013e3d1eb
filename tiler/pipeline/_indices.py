"""Spectral indices of a scene into a GeoTIFF, strip by strip (``tiler indices``)."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Optional, Sequence, Union

import rasterio

from tiler._version import __version__
from tiler.config import (
    InferenceConfig,
    OutputConfig,
    StreamConfig,
    split_options,
)
from tiler.destination import GEOTIFF_SUFFIXES, Destination
from tiler.engine import ProgressCallback, stream_values
from tiler.errors import UsageError
from tiler.indices import INDICES, ChannelPlan
from tiler.output import check_creation_options
from tiler.pipeline._prepare import _check_reflectance, _log_scene, _register, scene_context
from tiler.pipeline._run import _destinations
from tiler.reports import IndexReport
from tiler.scene import open_scene
from tiler.sinks import (
    IndexSink,
    feed,
)

log = logging.getLogger(__name__)


def index_scene(
    scene: Union[str, os.PathLike],
    out: Union[str, os.PathLike, Destination],
    indices: Sequence[str],
    *,
    params: Optional[dict[str, dict[str, float]]] = None,
    inference: Optional[InferenceConfig] = None,
    streaming: Optional[StreamConfig] = None,
    output: Optional[OutputConfig] = None,
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    **options: Any,
) -> IndexReport:
    """Compute spectral indices of a scene into a float32 GeoTIFF, strip by strip.

    Parameters
    ----------
    scene : path-like
        A raster, scene manifest or sensor folder (:func:`tiler.scene.open_scene`)
        whose bands carry the indices' input band names.
    out : path-like or Destination
        Output GeoTIFF (``.tif``/``.tiff``): one float32 band per index, band
        descriptions set to the index names, nodata NaN; guarded, written to a
        temporary file and renamed into place when complete and verified (as
        for :func:`run_scene`).
    indices : sequence of str
        Index names (:data:`tiler.indices.INDICES`), in band order.
    params : dict, optional
        Per index, parameter overrides, e.g. ``{"savi": {"L": 1.0}}``.
    inference : InferenceConfig, optional
        Its ``reference`` and ``registration*`` fields apply.
    streaming : StreamConfig, optional
        ``strip_rows`` (reference-grid rows per strip), ``band_width`` (columns per column band) and
        ``gdal_cache_mb`` apply: streamed by :func:`tiler.engine.stream_values`.
    output : OutputConfig, optional
        ``creation_options`` and ``cog`` apply.
    overwrite : bool, default False
    progress : callable, optional
        ``progress(done, total)`` in rows (over all column bands).
    **options
        Fields of the configs by name (``strip_rows=64``, ``cog=True``).

    Returns
    -------
    IndexReport

    Raises
    ------
    UsageError
        Unknown index or parameter (exit code 2).
    SceneReadError, BandMismatchError, RegistrationError, OutputExistsError, OutputPathError, OutputBusyError
        Bad input or destination (exit code 2); nothing is written.
    DiskFullError
        The disk filled (exit code 1); nothing is left.
    """

    t_start = time.perf_counter()
    seconds = {"register": 0.0, "read": 0.0, "compute": 0.0, "write": 0.0}
    inference, streaming, output = split_options(options, inference or InferenceConfig(),
                                                 streaming or StreamConfig(), output or OutputConfig())
    names = [n.lower() for n in indices]
    params = {k.lower(): dict(v) for k, v in (params or {}).items()}
    unknown = [n for n in names + list(params) if n not in INDICES]
    if not names or unknown:
        raise UsageError(f"unknown or missing index name(s) {unknown or '(none given)'}; known: {', '.join(INDICES)}")
    for n, p in params.items():
        bad = set(p) - set(INDICES[n].params)
        if bad:
            raise UsageError(f"{n} has no parameter(s) {', '.join(sorted(bad))}; "
                             f"its parameters: {', '.join(INDICES[n].params) or 'none'}")
    co = check_creation_options(dict(output.creation_options), dtype="float32", count=len(names))
    strip_rows = streaming.strip_rows
    with _destinations({"out": (out, GEOTIFF_SUFFIXES)}, scene, [], overwrite) as dests, \
            rasterio.Env(**streaming.gdal_env), \
            open_scene(scene, reference=inference.reference) as sc:
        sink = IndexSink(dests["out"], creation_options=co, cog=output.cog)
        plan = ChannelPlan.for_scene(sc, names)
        _check_reflectance(sc, plan)
        _log_scene(sc, plan)
        reg_report = _register(sc, plan, inference, seconds)
        radiometry = {}
        for i in plan.indexes:
            b = sc.band(i)
            radiometry[b.name] = {"group": sc.group_of(i), "scale": b.scale, "offset": b.offset,
                                  "saturation_dn": b.saturation}
        described = {n: {"formula": INDICES[n].formula, "params": {**INDICES[n].params, **params.get(n, {})},
                         "bounds": INDICES[n].bounds, "reference": INDICES[n].reference} for n in names}
        context = scene_context(
            sc, tuple(names),
            {"TILER_VERSION": __version__, "TILER_INDICES": ",".join(names),
             "TILER_RADIOMETRY": json.dumps({"bands": radiometry, "notes": list(sc.notes)}),
             "TILER_INDEX_DEFINITIONS": json.dumps(described)})
        blocks = stream_values(lambda rows, cols: sc.read(rows, cols, plan.indexes), sc.height, sc.width,
                               lambda data, valid: plan.build(data, valid, **params), strip_rows=strip_rows,
                               band_width=streaming.band_width, seconds=seconds, progress=progress)
        feed(blocks, [sink], context, seconds=seconds)
        seconds["total"] = time.perf_counter() - t_start
        return IndexReport(scene=sc.describe(), out=dests["out"].location, indices=described, radiometry=radiometry,
                           registration=reg_report, seconds={k: round(v, 4) for k, v in seconds.items()},
                           options={"inference": {k: inference.to_dict()[k] for k in
                                                  ("reference", "registration", "registration_model",
                                                                     "registration_grid", "registration_window")},
                                    "streaming": streaming.to_dict(), "output": output.to_dict()})
