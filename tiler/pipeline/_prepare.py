"""A scene made ready for a run: the model's channels mapped, its domain checked, its band groups registered;
the products' grid and tags."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from typing import Optional, Union

from tiler._logging import notice
from tiler._version import __version__
from tiler.config import (
    InferenceConfig,
    StreamConfig,
)
from tiler.domain import InputScale, check_domain, sample_channels
from tiler.errors import UsageError
from tiler.indices import INDICES, ChannelPlan
from tiler.model import ModelInfo
from tiler.plan import PatchGrid
from tiler.scene import ProcessingGrid, processing_grid
from tiler.sinks import (
    OutputContext,
    not_georeferenced_note,
)
from tiler.source import ChannelSource
from tiler.storage import redact

log = logging.getLogger(__name__)


#: Scene kinds (:attr:`tiler.scene.Scene.kind`) whose band groups their producer co-registers: where image-based
#: registration finds too few usable windows, ``--registration auto`` keeps their georeferenced places.
CO_REGISTERED = ("sentinel2", "landsat")


def _register(sc, plan: ChannelPlan, inference: InferenceConfig, seconds: dict) -> Optional[dict]:
    """Register the groups ``plan`` reads (``auto``), add ``seconds["register"]``, return the report entry."""
    used = sorted({sc.group_of(i) for i in plan.indexes} - {sc.reference})
    if not used:
        return None
    if inference.registration == "off":
        for n in used:
            log.info("registration off: group %s placed by its %s only", n, sc.grid(n).placed_by)
        return {"off": True, "groups": {n: {"placed_by": sc.grid(n).placed_by} for n in used}}
    from tiler.registration import register_scene

    t = time.perf_counter()
    reg = register_scene(sc, groups=used, model=inference.registration_model, grid=inference.registration_grid,
                         window=inference.registration_window)
    # A product whose bands its producer co-registered: too few usable windows (snow, cloud, water) is a
    # normal scene, not a broken one; its groups stay where their georeferencing puts them.
    fallback = bool(reg.failures) and inference.registration == "auto" and sc.kind in CO_REGISTERED
    reg.apply(sc, strict=not fallback)
    report = reg.to_dict()
    if fallback:
        reason = reg.failure_message(f"the groups stay where the {sc.kind} product's georeferencing puts them "
                                     "(its producer co-registers its bands); --registration strict refuses "
                                     "instead")
        log.warning("%s", reason)
        report["fallback"] = reason
    for g in report["groups"].values():
        g.pop("windows")
        if g["status"] != "reference":
            log.info("registration of group %s against %s: %s, %s, shift %s group px (%s m), %d windows used, "
                     "rejected %s, residual %s ref px (%s)", g["group"], g["anchor"], g["status"], g["model"],
                     g["shift_group_px"], g["shift_m"], g["windows_used"], g["windows_rejected"] or "none",
                     g["residual_rms_reference_px"], g["model_reason"] or g["reason"])
            for note in g["notes"]:
                log.info("registration of group %s: %s", g["group"], note)
    seconds["register"] = time.perf_counter() - t
    return report


def _domain_fixes(verdict) -> str:
    """What a refusal tells the user to do, with a scale computed from the scene's and the model's ranges."""
    example = ""
    for row in verdict.channels:
        scene, model = row.get("scene_range"), row.get("model_range")
        if scene and model and scene[1] > 0 and model[1] > 0 and scene[1] != model[1]:
            example = (f", e.g. --input-scale {model[1] / scene[1]:.3g} maps this scene's "
                       f"{row['scene_dtype']} 99th percentile {scene[1]:.4g} onto the model's {model[1]:.4g}")
            break
    return ("Values of another unit or bit depth: fix them with --input-scale SCALE[,OFFSET] (value * SCALE + "
            f"OFFSET{example}), a manifest's scale/offset, or a model trained on such data; --force runs anyway")


def run_grid(sc, info: ModelInfo, inference: InferenceConfig, output_grid: str = "scene") -> ProcessingGrid:
    """The processing grid of a run (:func:`tiler.scene.processing_grid` for the model's training pixel size).

    Parameters
    ----------
    sc : tiler.scene.Scene
    info : ModelInfo
    inference : InferenceConfig
        Its ``resample``.
    output_grid : {"scene", "model"}
        :attr:`OutputConfig.grid`.

    Returns
    -------
    ProcessingGrid

    Raises
    ------
    UsageError
        ``--grid model`` on a resampled grid of a scene placed by GCPs or RPCs alone (their pixel
        coordinates are the scene's).
    """
    domain = info.input_domain
    pg = processing_grid(sc, domain.pixel_size if domain is not None else None, resample=inference.resample)
    if pg.resampled and output_grid == "model" and not sc.georeferenced:
        raise UsageError(f"--grid model: {redact(sc.path)} is placed by ground control points or RPCs alone, "
                         "which name pixels of its own grid; write on the scene's grid (--grid scene, the "
                         "default)")
    if not pg.resampled and output_grid == "model":
        notice(log, "--grid model: the processing grid is %s, so the products are on it", pg.reason)
    return pg


def domain_verdict(sc, plan: ChannelPlan, info: ModelInfo, input_scale: Optional[InputScale], *,
                   grid: Optional[ProcessingGrid] = None):
    """Sample a scene's channels as the model would get them and check them against its training domain.

    Parameters
    ----------
    sc : tiler.scene.Scene
    plan : ChannelPlan
    info : ModelInfo
    input_scale : InputScale or None
    grid : ProcessingGrid, optional
        The run's processing grid: at the model's pixel size, the scene's pixel size is not a concern.

    Returns
    -------
    DomainVerdict or None
        None when the model file records no training domain.
    """
    domain = info.input_domain
    if domain is None:
        return None
    samples = sample_channels(ChannelSource(sc, plan, input_scale=input_scale), sc.height, sc.width,
                              strips=sc.striped())
    # With --input-scale the values are floats that the user has mapped into the model's range on purpose.
    dtypes = plan.dtypes(sc) if input_scale is None else ("float32",) * len(domain.channels)
    pixel_size = domain.pixel_size if grid is not None and grid.resampled else sc.pixel_size_m()
    return check_domain(domain, samples, dtypes, pixel_size=pixel_size, scaled=input_scale is not None)


def _check_domain(sc, plan: ChannelPlan, info: ModelInfo, scale: Optional[InputScale], *, force: bool,
                  grid: Optional[ProcessingGrid] = None):
    """:func:`domain_verdict`, logged; refuse the scene unless ``force``."""
    verdict = domain_verdict(sc, plan, info, scale, grid=grid)
    if verdict is None:
        log.warning("the model file records no training domain (an older file): the scene's values are not "
                    "checked against it; add one with tiler.model.update_info(path, domain=...) or retrain")
        return None
    for row in verdict.channels:
        log.info("domain %s: scene %s %s, model %s %s", row["name"], row["scene_dtype"], row["scene_range"],
                 row["model_dtype"], row["model_range"])
    for w in verdict.warnings:
        log.warning(w)
    if not verdict.ok:
        if force:
            log.warning("--force: predicting although " + "; ".join(verdict.problems))
        else:
            verdict.raise_if_refused(fixes=_domain_fixes(verdict))
    return verdict


def _log_scene(sc, plan: ChannelPlan) -> None:
    """Notices (band mapping by position, layout assumptions) and the -v details of a scene."""
    for n in sc.notes:
        notice(log, "%s", n)
    if not (sc.georeferenced or sc.gcps or sc.rpcs is not None):
        notice(log, "%s", not_georeferenced_note(redact(sc.path)))
    log.info("band mapping (%s): %s", plan.method,
             "; ".join(f"{c} <- {how}" for c, how in zip(plan.channels, plan.describe(sc))))
    for g in sc.groups:
        grid = sc.grid(g.name)
        log.info("group %s: %d x %d px, pixel %.4g, placed by %s, scale %s, offset %s", g.name, grid.width,
                 grid.height, grid.pixel_size, grid.placed_by, sorted({b.scale for b in g.bands}),
                 sorted({b.offset for b in g.bands}))


def prepare_scene(sc, info: ModelInfo, inference: InferenceConfig, seconds: dict, *,
                  grid: Optional[ProcessingGrid] = None):
    """Map the model's channels onto an open scene, check its domain, register its band groups.

    Parameters
    ----------
    sc : tiler.scene.Scene
        Corrections of the registered groups are set on it.
    info : ModelInfo
    inference : InferenceConfig
    seconds : dict
        ``seconds["register"]`` gets the registration time.
    grid : ProcessingGrid, optional
        The run's processing grid (:func:`run_grid`), logged.

    Returns
    -------
    tuple
        ``(plan, verdict, registration report)``: the :class:`ChannelPlan`,
        the domain verdict (or None) and the JSON-ready registration summary
        (or None where no other group is read).

    Raises
    ------
    BandMismatchError, DomainError, RegistrationError
        The scene lacks a channel, is outside the model's domain (without
        ``force``), or a group cannot be registered.
    """
    plan = ChannelPlan.for_scene(sc, info.channels, bands=inference.bands)
    _log_scene(sc, plan)
    if grid is not None and grid.resampled:
        notice(log, "processing grid: %s; --resample off keeps the scene's grid", grid.reason)
    elif grid is not None:
        log.info("processing grid: %s", grid.reason)
    verdict = _check_domain(sc, plan, info, inference.input_scale, force=inference.force, grid=grid)
    reg_report = _register(sc, plan, inference, seconds)
    return plan, verdict, reg_report


def output_context(sc, info: ModelInfo, inference: InferenceConfig, scene: Union[str, os.PathLike],
                   tags: Optional[dict] = None, *, grid: Optional[ProcessingGrid] = None) -> OutputContext:
    """The :class:`OutputContext` of a run's products: the reference grid (or the processing grid), classes,
    dataset tags.

    Parameters
    ----------
    sc : tiler.scene.Scene
    info : ModelInfo
    inference : InferenceConfig
    scene : path-like
        The scene as given (its stem identifies it in a WKT CSV).
    tags : dict, optional
        Extra dataset tags (a distributed run's fingerprint).
    grid : ProcessingGrid, optional
        Write on this grid (``--grid model``) instead of the reference grid.
    """
    return scene_context(
        sc, tuple(info.classes),
        {"TILER_VERSION": __version__, "TILER_CLASSES": ",".join(info.classes), "TILER_TTA": inference.tta,
         **(tags or {})}, labels=info.labels, grid=grid,
        source=os.path.splitext(os.path.basename(os.fspath(scene).rstrip(os.sep)))[0])


def scene_context(sc, band_names: tuple, tags: dict, *, labels=None, grid: Optional[ProcessingGrid] = None,
                  source: Optional[str] = None) -> OutputContext:
    """The :class:`OutputContext` of any product of a scene: its grid and georeferencing (transform and CRS, or
    the GCPs or RPCs), the products' band names and tags.

    Parameters
    ----------
    sc : tiler.scene.Scene
    band_names : tuple of str
        Class names (predictions) or index names.
    tags : dict
        Dataset tags.
    labels : LabelScheme, optional
    grid : ProcessingGrid, optional
        Write on this grid instead of the reference grid (``--grid model``).
    source : str, optional
        The scene's identifier (a WKT CSV's ``image_id``).
    """
    width, height, transform = sc.width, sc.height, sc.transform
    if grid is not None and grid.resampled:
        width, height, transform = grid.width, grid.height, grid.transform
    return OutputContext(width, height, sc.crs if sc.georeferenced else None,
                         transform if sc.georeferenced else None, band_names, labels=labels, tags=tags,
                         source=source, gcps=sc.gcps, rpcs=sc.rpcs)


def grid_summary(grid: PatchGrid, streaming: StreamConfig) -> dict:
    """The patch grid of a run, JSON-ready (the report's ``grid``)."""
    return {"patch_size": grid.patch_size, "stride": grid.stride, "overlap_px": grid.overlap,
            "patch_rows": grid.rows.count, "patch_cols": grid.cols.count,
            "strips": len(list(grid.strips(streaming.strip_rows))),
            "column_bands": len(list(grid.column_bands(streaming.band_width)))}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def _check_reflectance(sc, plan) -> None:
    """Refuse indices with additive constants on raw digital numbers; note the scale-invariant ones.

    Raises
    ------
    UsageError
        If an index that needs reflectance (:attr:`SpectralIndex.needs_reflectance`)
        reads unscaled integer bands.
    """

    raw = plan.unscaled_inputs(sc)
    refused = {n: b for n, b in raw.items() if INDICES[n].needs_reflectance}
    if refused:
        bands = sorted({i for b in refused.values() for i in b})
        names = " and ".join(n.upper() for n in refused)
        raise UsageError(
            f"{names} {'need' if len(refused) > 1 else 'needs'} surface reflectance in [0, 1] (the additive "
            "constants of "
            f"{', '.join(INDICES[n].formula for n in refused)} are calibrated for it), but band(s) "
            f"{', '.join(f'{i} ({sc.band_names[i - 1]}, {sc.value_dtype(i)})' for i in bands)} of {sc.path!r} are "
            "unscaled digital numbers; give their group a radiometric `scale`/`offset` in a scene manifest "
            "(e.g. scale = 0.0001 for Sentinel-2 L2A), or open the product's folder so that tiler reads its "
            "scaling from the metadata")
    if raw:
        notice(log, "%s computed on unscaled digital numbers: a normalised difference does not depend on a "
               "common scale of its bands, but differs from the reflectance index where the bands have offsets",
               ", ".join(raw))
