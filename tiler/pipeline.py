"""The streaming engine: :func:`run_scene`, and its in-memory twin :func:`predict`."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import rasterio

from tiler._engine import PatchStats, ProgressCallback, ReadFunction, blend_patches, stream
from tiler._logging import notice
from tiler._version import __version__
from tiler.blend import Accumulator, WindowFunction, get_window
from tiler.destination import GEOTIFF_SUFFIXES, Destination, guard_outputs, scene_inputs
from tiler.domain import InputScale, check_domain, sample_channels
from tiler.errors import BandMismatchError, PlanError, UsageError
from tiler.indices import ChannelPlan
from tiler.model._file import DEFAULT_MODEL_PATH, ModelInfo, TilerModel, load_model, read_info
from tiler.model._predictor import Predictor
from tiler.output import CLASS_NODATA, MaskWriter, check_creation_options, parse_creation_options
from tiler.plan import PatchGrid, reflect_indices
from tiler.registration import MODELS as REGISTRATION_MODELS
from tiler.scene import open_scene

__all__ = ["predict", "run_scene", "index_scene", "resolve_model", "channel_reader", "domain_verdict", "OUTPUTS",
           "REGISTRATION"]

log = logging.getLogger(__name__)

#: Output kinds of :func:`run_scene`.
OUTPUTS = ("class", "probability")

#: Registration modes of :func:`run_scene`: estimate and apply (``auto``), or
#: place band groups by their georeferencing only (``off``).
REGISTRATION = ("auto", "off")

#: Default overlap: half a patch, the original smooth-blending method's
#: ``subdivisions=2``.
DEFAULT_OVERLAP = 0.5
#: Default scene rows per strip (rounded to whole strides).
DEFAULT_STRIP_ROWS = 512
#: Default output columns per column band: bounds memory for very wide scenes
#: (DESIGN.md invariant 4); a multiple of the 512-pixel output tile.
DEFAULT_BAND_WIDTH = 8192
#: GDAL block cache for a run, in MB: enough for a strip of input tiles, small
#: enough that memory stays flat in scene size.
DEFAULT_GDAL_CACHE_MB = 64


def resolve_model(model: Union[None, str, os.PathLike, TilerModel]) -> TilerModel:
    """Return a loaded model: the default one, one from a path, or ``model`` itself."""
    if isinstance(model, TilerModel):
        return model
    return load_model(model)


def _check_patch_size(info: ModelInfo, patch_size: Optional[int]) -> int:
    if patch_size is None:
        return info.patch_size
    multiple = 2 ** info.depth
    if not isinstance(patch_size, (int, np.integer)) or patch_size < multiple or patch_size % multiple:
        raise PlanError(
            f"patch size {patch_size} is not a positive multiple of 2**depth = {multiple} "
            f"for this model (depth {info.depth}); use e.g. {max(multiple, info.patch_size)}"
        )
    return int(patch_size)


def predict(
    image: np.ndarray,
    *,
    model: Union[None, str, os.PathLike, TilerModel] = None,
    patch_size: Optional[int] = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 8,
    window: Union[str, WindowFunction] = "spline",
    valid: Optional[np.ndarray] = None,
    tta: str = "none",
    tta_mean: str = "arithmetic",
    tta_device: str = "graph",
) -> np.ndarray:
    """Blend patch predictions over a whole in-memory image.

    The whole-scene counterpart of :func:`run_scene`: same global patch grid,
    same reflect padding, same window, one full-size accumulator.

    Parameters
    ----------
    image : ndarray of shape (channel, row, col)
        The model's input channels in its order, as read from the scene (the
        model's normalisation is applied here). Any real dtype; computed in
        float32.
    model : path-like or TilerModel, optional
        Default: the model shipped with tiler.
    patch_size : int, optional
        Patch side in pixels, a multiple of ``2**depth``; default: the
        model's training patch size.
    overlap : float, default 0.5
        Fraction of a patch shared with its neighbour, in [0, 1).
    batch_size : int, default 8
        Patches per network call.
    window : str or callable, default "spline"
        Blending window (see :data:`tiler.blend.WINDOWS`).
    valid : ndarray of shape (row, col), bool, optional
        Valid-data mask; invalid pixels are filled before prediction and are
        NaN in the result.
    tta : {"none", "flip", "d4"}, default "none"
        Test-time augmentation (see :class:`tiler.model.Predictor`).
    tta_mean : {"arithmetic", "geometric"}
        Averaging of the TTA variants.
    tta_device : {"graph", "host"}
        Where the TTA rotations run.

    Returns
    -------
    ndarray of shape (class, row, col), float32
        Blended class probabilities.

    Raises
    ------
    BandMismatchError
        If ``image`` has another number of channels than the model.
    PlanError
        For a bad patch size, overlap or batch size.
    """
    tm = resolve_model(model)
    image = np.asarray(image)
    if image.ndim != 3:
        raise BandMismatchError(f"image must have shape (channel, row, col), got {image.shape}")
    if image.shape[0] != len(tm.info.channels):
        raise BandMismatchError(
            f"image has {image.shape[0]} channel(s) but the model needs "
            f"{len(tm.info.channels)} ({', '.join(tm.info.channels)})"
        )
    p = _check_patch_size(tm.info, patch_size)
    _, height, width = image.shape
    grid = PatchGrid.from_overlap(height, width, patch_size=p, overlap=overlap)
    predictor = Predictor(tm, batch_size=batch_size, tta=tta, tta_mean=tta_mean, tta_device=tta_device)
    rows, cols = grid.rows, grid.cols
    r0, r1 = rows.origin(0), rows.origin(rows.count - 1) + p
    c0, c1 = cols.origin(0), cols.origin(cols.count - 1) + p
    ridx, cidx = reflect_indices(r0, r1, height), reflect_indices(c0, c1, width)
    bands = image.astype(np.float32, copy=False)[:, ridx][:, :, cidx]
    if valid is None:
        vmask = np.ones((r1 - r0, c1 - c0), bool)
    else:
        vmask = np.asarray(valid, bool)[ridx][:, cidx]
        bands[:, ~vmask] = np.asarray(tm.info.offset, np.float32)[:, None]
    acc = Accumulator(predictor.classes, (r0, r1), (c0, c1), get_window(window, p))
    positions = [(int(r), int(c)) for r in rows.origins() for c in cols.origins()]
    blend_patches(bands, vmask, (r0, c0), positions, predictor, acc, PatchStats())
    out = acc.normalised((0, height), (0, width))
    if valid is not None:
        out[:, ~np.asarray(valid, bool)] = np.nan
    return out


def _register(sc, plan: ChannelPlan, registration: str, model: str, seconds: dict) -> Optional[dict]:
    """Register the groups ``plan`` reads (``auto``), add ``seconds["register"]``, return the report entry."""
    used = sorted({sc.group_of(i) for i in plan.indexes} - {sc.reference})
    if not used:
        return None
    if registration == "off":
        for n in used:
            log.info("registration off: group %s placed by its %s only", n, sc.grid(n).placed_by)
        return {"off": True, "groups": {n: {"placed_by": sc.grid(n).placed_by} for n in used}}
    from tiler.registration import register_scene

    t = time.perf_counter()
    reg = register_scene(sc, groups=used, model=model)
    reg.apply(sc)
    report = reg.to_dict()
    for g in report["groups"].values():
        g.pop("windows")
        if g["status"] != "reference":
            log.info("registration of group %s against %s: %s, %s, shift %s group px (%s m), %d windows used, "
                     "rejected %s, residual %s ref px", g["group"], g["anchor"], g["status"], g["model"],
                     g["shift_group_px"], g["shift_m"], g["windows_used"], g["windows_rejected"] or "none",
                     g["residual_rms_reference_px"])
    seconds["register"] = time.perf_counter() - t
    return report


def _creation_options(creation_options: Union[None, Sequence[str], dict]) -> dict[str, str]:
    if isinstance(creation_options, dict):
        return {k.upper(): str(v) for k, v in creation_options.items()}
    return parse_creation_options(creation_options or ())


def _check_registration(registration: str, model: str) -> None:
    if registration not in REGISTRATION or model not in REGISTRATION_MODELS:
        raise UsageError(f"registration must be one of {', '.join(REGISTRATION)} and its model one of "
                         f"{', '.join(REGISTRATION_MODELS)}, got {registration!r} and {model!r}")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


@contextmanager
def _destination(out: Union[str, os.PathLike, Destination], scene: Union[str, os.PathLike],
                 other_inputs: Sequence[str], overwrite: bool) -> Iterator[Destination]:
    """The checked, locked destination of a library call (or the caller's own)."""
    if isinstance(out, Destination):
        yield out
        return
    with guard_outputs({"out": (out, GEOTIFF_SUFFIXES)}, inputs=[*scene_inputs(scene), *other_inputs],
                       overwrite=overwrite) as guard:
        yield guard["out"]


def channel_reader(sc, plan: ChannelPlan, info: ModelInfo, input_scale: Optional[InputScale], *,
                   fill: bool) -> ReadFunction:
    """The source of the model's channels: ``read(rows, cols) -> (channels, valid)``.

    Reads the plan's bands of a reference-grid window (reflect-padded past the
    edges), builds the channels (bands and indices), applies ``--input-scale``
    and, with ``fill``, the fill policy: nodata pixels get each channel's
    normalisation offset (its training mean), and so does an index value that is
    undefined where its bands are valid (a zero denominator), whose pixel stays
    valid.

    Parameters
    ----------
    sc : tiler.scene.Scene
    plan : ChannelPlan
    info : ModelInfo
    input_scale : InputScale or None
    fill : bool
        Apply the fill policy (for prediction); without it invalid pixels and
        undefined index values are left as read (for sampling the domain).

    Returns
    -------
    callable
        ``read(rows, cols) -> (ndarray (channel, row, col) float32, ndarray (row, col) bool)``.
    """
    fillv = np.asarray(info.offset, np.float32)[:, None]
    gain = bias = None
    if input_scale is not None:
        gain, bias = input_scale.per_channel(plan.channels, plan.index_channels)
        gain, bias = gain[:, None, None], bias[:, None, None]

    def read(rows, cols):
        data, valid = sc.read(rows, cols, plan.indexes)
        data = plan.build(data, valid)
        if gain is not None:
            data = data * gain + bias
        if fill:
            data[:, ~valid] = fillv
            if plan.index_channels:
                np.copyto(data, np.broadcast_to(fillv[:, :, None], data.shape), where=np.isnan(data))
        return data, valid

    return read


#: What ``--force``-less refusals tell the user to do.
_DOMAIN_FIXES = ("Fix it with --input-scale SCALE[,OFFSET] (value * SCALE + OFFSET, e.g. --input-scale 0.0625 for "
                 "12-bit data and an 8-bit model), a manifest's scale/offset, or a model trained on such data; "
                 "--force runs anyway")


def domain_verdict(sc, plan: ChannelPlan, info: ModelInfo, input_scale: Optional[InputScale]):
    """Sample a scene's channels as the model would get them and check them against its training domain.

    Parameters
    ----------
    sc : tiler.scene.Scene
    plan : ChannelPlan
    info : ModelInfo
    input_scale : InputScale or None

    Returns
    -------
    DomainVerdict or None
        None when the model file records no training domain.
    """
    domain = info.input_domain
    if domain is None:
        return None
    samples = sample_channels(channel_reader(sc, plan, info, input_scale, fill=False), sc.height, sc.width)
    # With --input-scale the user has mapped the values into the model's: its dtypes are what they stand for.
    dtypes = plan.dtypes(sc) if input_scale is None else tuple(c.dtype for c in domain.channels)
    return check_domain(domain, samples, dtypes, pixel_size=sc.pixel_size_m())


def _check_domain(sc, plan: ChannelPlan, info: ModelInfo, scale: Optional[InputScale], *, force: bool):
    """:func:`domain_verdict`, logged; refuse the scene unless ``force``."""
    verdict = domain_verdict(sc, plan, info, scale)
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
            verdict.raise_if_refused(fixes=_DOMAIN_FIXES)
    return verdict


def _log_scene(sc, plan: ChannelPlan) -> None:
    """Notices (band mapping by position, layout assumptions) and the -v details of a scene."""
    for n in sc.notes:
        notice(log, "%s", n)
    log.info("band mapping (%s): %s", plan.method,
             "; ".join(f"{c} <- {how}" for c, how in zip(plan.channels, plan.describe(sc))))
    for g in sc.groups:
        grid = sc.grid(g.name)
        log.info("group %s: %d x %d px, pixel %.4g, placed by %s, scale %s, offset %s", g.name, grid.width,
                 grid.height, grid.pixel_size, grid.placed_by, sorted({b.scale for b in g.bands}),
                 sorted({b.offset for b in g.bands}))


def run_scene(
    scene: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    *,
    model: Union[None, str, os.PathLike, TilerModel] = None,
    patch_size: Optional[int] = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = 8,
    output: str = "class",
    window: Union[str, WindowFunction] = "spline",
    tta: str = "none",
    tta_mean: str = "arithmetic",
    tta_device: str = "graph",
    bands: Optional[Sequence[int]] = None,
    strip_rows: int = DEFAULT_STRIP_ROWS,
    band_width: int = DEFAULT_BAND_WIDTH,
    overwrite: bool = False,
    creation_options: Union[None, Sequence[str], dict] = None,
    progress: Optional[ProgressCallback] = None,
    gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB,
    reference: Optional[str] = None,
    registration: str = "auto",
    registration_model: str = "auto",
    input_scale: Union[None, InputScale, Sequence[str]] = None,
    force: bool = False,
) -> dict[str, Any]:
    """Segment a scene, streaming it strip by strip, into a GeoTIFF mask.

    Only one strip of patch rows (plus its halo) of one column band is in
    memory at a time; the result equals :func:`predict` on the whole scene.

    Parameters
    ----------
    scene : path-like
        A raster rasterio can open, a scene manifest (``.toml``) or a sensor
        folder (Sentinel-2, Landsat-8/9, WorldView-3) holding the model's
        channels; see :func:`tiler.scene.open_scene`.
    out : path-like or Destination
        Output GeoTIFF (``.tif``/``.tiff``). Checked and locked before any
        work (:func:`tiler.destination.guard_outputs`; the scene's files and
        the model file count as inputs), written to a temporary file in the
        same folder and renamed into place when complete and verified. A
        :class:`~tiler.destination.Destination` the caller already guarded is
        used as it is.
    model : path-like or TilerModel, optional
        Default: the model shipped with tiler.
    patch_size : int, optional
        Patch side in pixels (multiple of ``2**depth``); default: the model's.
    overlap : float, default 0.5
        Patch overlap as a fraction of the patch, in [0, 1).
    batch_size : int, default 8
        Patches per network call.
    output : {"class", "probability"}
        ``class``: uint8 class index per pixel with a colour table, nodata 255.
        ``probability``: float32, one band per class, nodata NaN.
    window : str or callable, default "spline"
        Blending window (see :data:`tiler.blend.WINDOWS`).
    tta : {"none", "flip", "d4"}, default "none"
        Test-time augmentation: each patch is also predicted mirrored
        (``flip``) or under all 8 dihedral transforms (``d4``), each
        prediction exactly un-transformed, then averaged.
    tta_mean : {"arithmetic", "geometric"}, default "arithmetic"
        Averaging of the TTA variants.
    tta_device : {"graph", "host"}, default "graph"
        Where the TTA rotations run: in the Keras graph (on the accelerator
        where there is one) or on the host (numba).
    bands : sequence of int, optional
        1-based scene band per model channel; default: matched by band name,
        or by position for unnamed bands.
    strip_rows : int, default 512
        Scene rows emitted per strip (rounded to whole strides).
    band_width : int, default 8192
        Output columns per column band.
    overwrite : bool, default False
        Replace an existing ``out``.
    creation_options : sequence of "NAME=VALUE" or dict, optional
        GeoTIFF creation options overriding the defaults.
    progress : callable, optional
        ``progress(done, total)`` in patches, after each batch.
    gdal_cache_mb : int, default 64
        GDAL block cache for the run.
    reference : str, optional
        Band group whose grid is the output grid; default the manifest's
        reference, else the finest group.
    registration : {"auto", "off"}, default "auto"
        ``auto``: the band groups the model reads are registered against the
        reference (:func:`tiler.registration.register_scene`) before the run,
        and the run stops if that fails; ``off``: groups are placed by their
        georeferencing (or extent) only.
    registration_model : {"auto", "translation", "affine"}
        Displacement model of the registration.
    input_scale : InputScale or sequence of str, optional
        ``value * scale + offset`` per channel before the model's normalisation
        (``--input-scale``), e.g. to feed 12-bit data to an 8-bit model.
    force : bool, default False
        Predict even when the scene is outside the model's training domain.

    Returns
    -------
    dict
        The run report: scene, grid, patch counts, seconds per stage
        (read, predict, blend, write, total), peak RSS of the process in MB,
        options.

    Raises
    ------
    SceneReadError, BandMismatchError, ModelFileError, PlanError, RegistrationError, UsageError
        Bad input or option (CLI exit code 2); nothing is written.
    DomainError
        The scene's values are far outside the model's training domain and
        ``force`` is false (exit code 2).
    OutputExistsError, OutputPathError, OutputBusyError
        The destination cannot be written safely (exit code 2).
    DiskFullError
        The disk filled (exit code 1); nothing is left.
    OutputVerificationError
        The finished file failed verification (exit code 4); nothing is left at ``out``.
    """
    t_start = time.perf_counter()
    stats = PatchStats()
    if output not in OUTPUTS:
        raise UsageError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    _check_registration(registration, registration_model)
    if strip_rows < 1 or band_width < 1:
        raise PlanError(f"strip rows and band width must be >= 1, got {strip_rows} and {band_width}")
    model_path = model.path if isinstance(model, TilerModel) else os.fspath(model or DEFAULT_MODEL_PATH)
    info = model.info if isinstance(model, TilerModel) else read_info(model_path)
    p = _check_patch_size(info, patch_size)
    win = get_window(window, p)
    PatchGrid.from_overlap(p, p, patch_size=p, overlap=overlap)  # validates the overlap before any work
    k = len(info.classes)
    out_dtype, out_count = ("uint8", 1) if output == "class" else ("float32", k)
    co = check_creation_options(_creation_options(creation_options), dtype=out_dtype, count=out_count)
    scale = InputScale.parse(input_scale)

    with _destination(out, scene, [model_path] if model_path else [], overwrite) as dest, \
            rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)), open_scene(scene, reference=reference) as sc:
        plan = ChannelPlan.for_scene(sc, info.channels, bands=bands)
        _log_scene(sc, plan)
        verdict = _check_domain(sc, plan, info, scale, force=force)
        tm = resolve_model(model)
        predictor = Predictor(tm, batch_size=batch_size, tta=tta, tta_mean=tta_mean, tta_device=tta_device)
        reg_report = _register(sc, plan, registration, registration_model, stats.seconds)
        grid = PatchGrid.from_overlap(sc.height, sc.width, patch_size=p, overlap=overlap)
        log.info("patch grid: patch %d px, stride %d px (overlap %d px), %d x %d patches, strips of %d rows, "
                 "column bands of %d columns", p, grid.stride, grid.overlap, grid.rows.count, grid.cols.count,
                 strip_rows, band_width)
        if output == "class":
            profile = {"dtype": "uint8", "count": 1, "nodata": CLASS_NODATA}
            colormap, descriptions = info.labels.colormap(), ["class"]
        else:
            profile = {"dtype": "float32", "count": k, "nodata": float("nan")}
            colormap, descriptions = None, list(info.classes)
        profile.update(width=sc.width, height=sc.height)
        if sc.georeferenced:
            profile.update(crs=sc.crs, transform=sc.transform)
        tags = {"TILER_VERSION": __version__, "TILER_CLASSES": ",".join(info.classes),
                "TILER_OUTPUT": output, "TILER_TTA": tta}
        read = channel_reader(sc, plan, info, scale, fill=True)

        with MaskWriter(dest, profile, creation_options=co, colormap=colormap,
                        descriptions=descriptions, tags=tags) as writer:

            def emit(acc, strip, band, valid):
                t = time.perf_counter()
                (e0, e1), (c0, c1) = strip.emit_rows, band.emit_cols
                r, c = e0 - strip.read_rows[0], c0 - band.read_cols[0]
                v = valid[r:r + e1 - e0, c:c + c1 - c0]
                if output == "class":
                    result = acc.emit_class((e0, e1), (c0, c1), v, nodata=CLASS_NODATA)[None]
                else:
                    result = acc.emit_probability((e0, e1), (c0, c1), v)
                t2 = time.perf_counter()
                writer.write_rows(result, (e0, e1), (c0, c1))
                stats.seconds["blend"] += t2 - t
                stats.seconds["write"] += time.perf_counter() - t2

            stream(read, grid, predictor, win, emit, strip_rows=strip_rows, band_width=band_width,
                   stats=stats, progress=progress)
            t = time.perf_counter()
            writer.commit()
            stats.seconds["write"] += time.perf_counter() - t

    stats.seconds["total"] = time.perf_counter() - t_start
    log.info("seconds: %s", ", ".join(f"{n} {v:.2f}" for n, v in stats.seconds.items()))
    return {
        "tiler_version": __version__,
        "scene": {"path": os.fspath(scene), "width": sc.width, "height": sc.height,
                  "bands": sc.count, "crs": sc.crs.to_string() if sc.crs else None,
                  "transform": list(sc.transform)[:6] if sc.georeferenced else None,
                  "band_mapping": {"indexes": list(plan.indexes), "method": plan.method,
                                   "index_channels": list(plan.index_channels)},
                  "kind": sc.kind, "reference": sc.reference, "notes": list(sc.notes)},
        "registration": reg_report,
        "domain": verdict.to_dict() if verdict is not None else None,
        "out": dest.path,
        "model": {"path": tm.path, "channels": list(info.channels), "classes": list(info.classes)},
        "grid": {"patch_size": p, "stride": grid.stride, "overlap_px": grid.overlap,
                 "patch_rows": grid.rows.count, "patch_cols": grid.cols.count,
                 "strips": len(list(grid.strips(strip_rows))),
                 "column_bands": len(list(grid.column_bands(band_width)))},
        "patches": {"grid": grid.count, "predicted": stats.predicted,
                    "skipped_nodata": stats.skipped_nodata},
        "seconds": {name: round(v, 4) for name, v in stats.seconds.items()},
        "megapixels_per_second": round(sc.width * sc.height / 1e6 / stats.seconds["total"], 4),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "options": {"overlap": overlap, "batch_size": batch_size, "output": output,
                    "window": window if isinstance(window, str) else getattr(window, "__name__", "callable"),
                    "tta": tta, "tta_mean": tta_mean, "tta_device": tta_device,
                    "strip_rows": strip_rows, "band_width": band_width,
                    "creation_options": co, "gdal_cache_mb": gdal_cache_mb,
                    "registration": registration, "registration_model": registration_model,
                    "input_scale": scale.to_dict() if scale is not None else None, "force": force},
    }


def index_scene(
    scene: Union[str, os.PathLike],
    out: Union[str, os.PathLike],
    indices: Sequence[str],
    *,
    params: Optional[dict[str, dict[str, float]]] = None,
    strip_rows: int = DEFAULT_STRIP_ROWS,
    overwrite: bool = False,
    creation_options: Union[None, Sequence[str], dict] = None,
    reference: Optional[str] = None,
    registration: str = "auto",
    registration_model: str = "auto",
    progress: Optional[ProgressCallback] = None,
    gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB,
) -> dict[str, Any]:
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
    strip_rows : int, default 512
        Reference-grid rows computed per strip.
    overwrite, creation_options, reference, registration, registration_model, progress, gdal_cache_mb
        As for :func:`run_scene`; ``progress(done, total)`` counts rows.

    Returns
    -------
    dict
        Report: scene, indices with formulas and parameters, radiometric
        scaling applied per input band, registration, seconds.

    Raises
    ------
    UsageError
        Unknown index or parameter (exit code 2).
    SceneReadError, BandMismatchError, RegistrationError, OutputExistsError, OutputPathError, OutputBusyError
        Bad input or destination (exit code 2); nothing is written.
    DiskFullError
        The disk filled (exit code 1); nothing is left.
    """
    from tiler.indices import INDICES

    t_start = time.perf_counter()
    seconds = {"register": 0.0, "read": 0.0, "compute": 0.0, "write": 0.0}
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
    _check_registration(registration, registration_model)
    if strip_rows < 1:
        raise PlanError(f"strip rows must be >= 1, got {strip_rows}")
    co = check_creation_options(_creation_options(creation_options), dtype="float32", count=len(names))
    with _destination(out, scene, [], overwrite) as dest, \
            rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)), open_scene(scene, reference=reference) as sc:
        plan = ChannelPlan.for_scene(sc, names)
        _log_scene(sc, plan)
        reg_report = _register(sc, plan, registration, registration_model, seconds)
        radiometry = {}
        for i in plan.indexes:
            b = sc.band(i)
            radiometry[b.name] = {"group": sc.group_of(i), "scale": b.scale, "offset": b.offset,
                                  "saturation_dn": b.saturation}
        described = {n: {"formula": INDICES[n].formula, "params": {**INDICES[n].params, **params.get(n, {})},
                         "bounds": INDICES[n].bounds, "reference": INDICES[n].reference} for n in names}
        profile = {"dtype": "float32", "count": len(names), "nodata": float("nan"),
                   "width": sc.width, "height": sc.height}
        if sc.georeferenced:
            profile.update(crs=sc.crs, transform=sc.transform)
        tags = {"TILER_VERSION": __version__, "TILER_INDICES": ",".join(names),
                "TILER_RADIOMETRY": json.dumps({"bands": radiometry, "notes": list(sc.notes)}),
                "TILER_INDEX_DEFINITIONS": json.dumps(described)}
        with MaskWriter(dest, profile, creation_options=co, descriptions=names, tags=tags) as writer:
            for r0 in range(0, sc.height, strip_rows):
                r1 = min(sc.height, r0 + strip_rows)
                t = time.perf_counter()
                data, valid = sc.read((r0, r1), (0, sc.width), plan.indexes)
                t2 = time.perf_counter()
                result = plan.build(data, valid, **params)
                t3 = time.perf_counter()
                writer.write_rows(result, (r0, r1), (0, sc.width))
                seconds["read"] += t2 - t
                seconds["compute"] += t3 - t2
                seconds["write"] += time.perf_counter() - t3
                if progress is not None:
                    progress(r1, sc.height)
            t = time.perf_counter()
            writer.commit()
            seconds["write"] += time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t_start
        return {"tiler_version": __version__, "scene": sc.describe(), "out": dest.path, "indices": described,
                "radiometry": radiometry, "registration": reg_report,
                "seconds": {k: round(v, 4) for k, v in seconds.items()},
                "options": {"strip_rows": strip_rows, "creation_options": co, "registration": registration,
                            "registration_model": registration_model, "gdal_cache_mb": gdal_cache_mb}}
