"""Wiring of source, engine and sinks: :func:`run_scene`, :func:`index_scene`; and
:func:`predict`, the in-memory twin of the streaming engine.

One concept a module: a run resolved once where it starts (``_resolve.py``: :class:`RunSpec`,
:func:`resolve_run`), a scene made ready for it (``_prepare.py``: channels, domain, registration),
the run itself (``_run.py``: :func:`run_scene`, :func:`run_resolved`, :func:`stream_region`), the
in-memory :func:`predict` (``_predict.py``) and :func:`index_scene` (``_indices.py``).
"""

from tiler.pipeline._indices import index_scene
from tiler.pipeline._predict import predict
from tiler.pipeline._prepare import (
    CO_REGISTERED,
    domain_verdict,
    grid_summary,
    output_context,
    peak_rss_mb,
    prepare_scene,
    run_grid,
)
from tiler.pipeline._resolve import (
    RunSpec,
    check_patch_size,
    check_run_options,
    predictor_for,
    resolve_model,
    resolve_run,
)
from tiler.pipeline._run import (
    grid_report,
    output_rows,
    raster_sink,
    run_report,
    run_resolved,
    run_scene,
    stream_region,
)
from tiler.reports import IndexReport, RunReport

__all__ = ["predict", "run_scene", "index_scene", "RunSpec", "resolve_run", "run_resolved", "stream_region",
           "check_patch_size",
           "resolve_model", "domain_verdict", "predictor_for", "prepare_scene", "output_context",
           "check_run_options", "RunReport", "IndexReport", "grid_summary", "peak_rss_mb",
           "raster_sink", "CO_REGISTERED", "run_grid", "grid_report",
           "output_rows", "run_report"]
