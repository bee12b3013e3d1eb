"""Shared options, error handling, progress and destination helpers of the ``tiler`` commands.

Exit codes (DESIGN.md): 0 success; 1 runtime failure; 2 bad usage or bad input;
3 partial failure in batch mode; 4 output failed its own verification.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import click

from tiler import _signals
from tiler._logging import NOTICE
from tiler.errors import (
    OutputVerificationError,
    SceneReadError,
    TilerError,
    UsageError,
    describe_failure,
    in_stage,
)

log = logging.getLogger("tiler")

EXIT_RUNTIME, EXIT_USAGE, EXIT_PARTIAL, EXIT_VERIFY = 1, 2, 3, 4
#: Exit status of a command stopped by SIGTERM (128 + 15, the shell's convention).
EXIT_TERMINATED = 128 + signal.SIGTERM
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT


# ---------------------------------------------------------------- shared options

def _verbosity(f):
    f = click.option("-v", "--verbose", count=True, help="More log output; -v also shows tracebacks.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bar, warnings and errors only.")(f)
    return f


def _overwrite(f):
    return click.option("--overwrite", is_flag=True, help="Replace an existing output file.")(f)


def _out(f):
    return click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
                        help="Output file.")(f)


def _model_option(f):
    return click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
                        help="Model file: .keras (written by `tiler train`) or .onnx (with tiler's metadata, a sidecar "
                             "MODEL.onnx.json or Deepness's keys), or a model name (`tiler models`); default: the "
                             "bundled model.")(f)


class _Formatter(logging.Formatter):
    """``note: ...``, ``warning: ...``; the logger's name only at -vv."""

    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        label = {NOTICE: "note", logging.INFO: "info", logging.DEBUG: "debug"}.get(
            record.levelno, record.levelname.lower())
        where = f" [{record.name}]" if self.verbose >= 2 else ""
        text = f"{label}{where}: {record.getMessage()}"
        if record.exc_info and self.verbose:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _setup_logging(verbose: int, quiet: bool) -> None:
    """Default: notices and warnings; -q: warnings; -v: info; -vv: debug, with the libraries' own."""
    level = logging.WARNING if quiet else (NOTICE, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(verbose))
    root = logging.getLogger("tiler")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)] + [handler]
    root.setLevel(level)
    # GDAL's messages come through rasterio's logger: shown from -v on (-vv: all of
    # them), never as stray lines beside tiler's one-line errors otherwise.
    libs = logging.getLogger("rasterio")
    libs.handlers[:] = [handler] if verbose else [logging.NullHandler()]
    libs.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    libs.propagate = False
    # TensorFlow's Python warnings (a traced function's "retracing" in training) are its business: -vv shows them.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def _handle_errors(func: Callable) -> Callable:
    """Turn tiler's errors into one-line messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        verbose = kwargs.get("verbose", 0)
        _setup_logging(verbose, kwargs.get("quiet", False))
        previous = _signals.install()
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            if _signals.requested() and not isinstance(exc, SystemExit):
                # Whatever surfaced (a library may have turned the signal into another error).
                if verbose and not isinstance(exc, KeyboardInterrupt):
                    log.debug("SIGTERM surfaced as %s: %s", type(exc).__name__, exc)
                click.echo("Terminated (SIGTERM); " + _left_behind(), err=True)
                sys.exit(EXIT_TERMINATED)
            _exit_for(exc, verbose)
        finally:
            _signals.restore(previous)

    return wrapper


def _left_behind() -> str:
    """The last line's account of what an interrupted command left on disk.

    Outputs are committed together (:class:`tiler.destination.OutputGuard`), so what is on disk is what
    was renamed into place before the signal (each complete), and what was kept on purpose to resume
    (:func:`tiler._signals.keep`); every other earlier file at the output paths is as it was.
    """
    written, kept = _signals.outputs_written(), _signals.kept()
    if not written:
        said = "no output was written" if kept else \
            "no output was written; files already at the output paths are as they were"
    elif len(written) <= 4:
        said = f"complete before the signal and kept: {', '.join(written)}"
    else:
        folders = sorted({os.path.dirname(p) for p in written})
        said = (f"{len(written)} outputs were complete before the signal and are kept (in "
                f"{', '.join(folders[:3])}{' ...' if len(folders) > 3 else ''})")
    return "; ".join([said, *kept]) + "."


def _exit_for(exc: BaseException, verbose: int) -> None:
    """Exit with the one-line message and exit code of ``exc``'s kind (others are re-raised)."""
    if isinstance(exc, UsageError):
        _fail(exc, EXIT_USAGE, verbose)
    elif isinstance(exc, OutputVerificationError):
        _fail(exc, EXIT_VERIFY, verbose)
    elif isinstance(exc, TilerError):
        _fail(exc, EXIT_RUNTIME, verbose)
    elif isinstance(exc, KeyboardInterrupt):
        click.echo("Interrupted; " + _left_behind(), err=True)
        sys.exit(EXIT_INTERRUPTED)
    elif isinstance(exc, Exception) and not isinstance(exc, click.exceptions.Exit):
        _fail(exc, EXIT_RUNTIME, verbose, unexpected=True)  # unexpected: say so, traceback with -v
    raise exc


def _fail(exc: BaseException, code: int, verbose: int, *, unexpected: bool = False) -> None:
    if verbose:
        log.exception("failed")
    click.echo("Error: " + (describe_failure(exc) if unexpected else str(exc)), err=True)
    sys.exit(code)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A stage of a command (``writing the report r.json``): an unexpected error inside it names it
    (:func:`tiler.errors.in_stage`)."""
    with in_stage(name):
        yield


class _Progress:
    """A tqdm bar on stderr, silent with -q or when stderr is not a terminal.

    Called as ``bar(done, total)``, or ``bar(parts done, parts total, scenes
    done, scenes total)`` for a run in parts (the scenes shown beside the bar).
    The bar is created on the first call, so a bar that is never fed never shows.
    """

    def __init__(self, quiet: bool, unit: str, desc: str) -> None:
        self.bar = None
        self.show = not quiet and sys.stderr.isatty()
        self.unit, self.desc = unit, desc

    def __call__(self, done: int, total: int, scenes_done: Optional[int] = None,
                 scenes_total: Optional[int] = None) -> None:
        if not self.show:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit=self.unit, desc=self.desc, file=sys.stderr, dynamic_ncols=True)
        self.bar.total = total
        self.bar.n = done
        if scenes_total is not None:
            self.bar.set_postfix_str(f"scenes {scenes_done}/{scenes_total}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class RegistryChoice(click.Choice):
    """click's ``Choice`` whose values are a registry's keys (``module.attribute``), read on use.

    The registries live with the parts that own them (windows and TTA in :mod:`tiler.blend`, runtimes in
    :mod:`tiler.model`, a config field's in :data:`tiler.config._REGISTRIES`); reading them only when an
    option is parsed or its help shown keeps ``tiler --help`` from importing them. The converted value is
    the registry's own (an ``int`` for ``--connectivity``).
    """

    def __init__(self, module: str, attribute: str, default=None) -> None:
        self._where = (module, attribute)
        self._default = default
        self.case_sensitive = True

    def _registry(self) -> tuple:
        module, attribute = self._where
        return tuple(getattr(importlib.import_module(module), attribute))

    @property
    def choices(self) -> tuple:  # type: ignore[override]
        return tuple(str(c) for c in self._registry())

    def convert(self, value, param, ctx):
        if value is not None and value == self._default:
            return value  # the field's own default: valid by construction, no registry imported
        text = super().convert(value, param, ctx)
        return next((c for c in self._registry() if str(c) == str(text)), text)


def config_option(config: str, field: str, *decls: str, **kwargs):
    """The option of a config field: its choices from the field's registry, its default from the field.

    Parameters
    ----------
    config : str
        ``InferenceConfig``, ``StreamConfig``, ``OutputConfig`` or ``VectorConfig``.
    field : str
        The field; the option's parameter name (the function argument) is the field's name unless ``decls``
        names another.
    *decls : str
        The option's names (``--tta``).
    **kwargs
        Passed to :func:`click.option` (``help`` ...).
    """
    import tiler.config as cfg

    cls = getattr(cfg, config)
    kwargs.setdefault("default", cfg.option_default(cls, field))
    if (config, field) in cfg._REGISTRIES:
        kwargs.setdefault("type", RegistryChoice(*cfg._REGISTRIES[(config, field)], kwargs["default"]))
    if kwargs["default"] is not None:
        kwargs.setdefault("show_default", True)
    if not any(d.isidentifier() for d in decls):
        decls = decls + (field,)
    return click.option(*decls, **kwargs)


def _reference(f):
    return click.option("--reference", default=None,
                        help="Band group whose grid is the reference (output) grid; default the finest.")(f)


def _registration_options(switch: bool = True, aliases: tuple = ((), ())):
    """The registration options of ``tiler run``, ``tiler indices`` and ``tiler register``, defined once.

    ``switch`` adds ``--registration auto|off``; ``aliases`` gives extra
    names for the grid and window options (``tiler register``'s older
    ``--grid``/``--window``).
    """
    def decorate(f):
        f = config_option("InferenceConfig", "registration_window", "--registration-window", *aliases[1],
                          help="Largest registration window side, in pixels of the coarser group of each pair "
                              "(shrunk to fit small scenes; at least 16).")(f)
        f = config_option("InferenceConfig", "registration_grid", "--registration-grid", *aliases[0],
                          help="Most registration windows per side (fewer where they would overlap by more than "
                              "half).")(f)
        f = config_option("InferenceConfig", "registration_model", "--registration-model",
                          help="Displacement model: a translation, an affine where the shift varies across the "
                              "scene, or auto (affine only where an F-test and its size say it is needed).")(f)
        if switch:
            f = config_option("InferenceConfig", "registration", "--registration",
                              help="Register the band groups that are read against the reference (auto: on a "
                                  "Sentinel-2 or Landsat product, a group with too few usable windows, e.g. under "
                                  "snow or cloud, keeps its georeferenced place with a warning), refuse a group "
                                  "that cannot be registered (strict), or place them by georeferencing only (off).")(f)
        return f
    return decorate


def _dask_client_logs(scheduler: Optional[str], verbose: int) -> None:
    """With ``--scheduler``: dask's client logs its reconnection errors on stderr when the scheduler goes away;
    tiler says it once (``SchedulerLost``), so they are shown from -v on. Set after distributed's import,
    which sets its loggers' levels from its config."""
    if scheduler is None:
        return
    import distributed  # noqa: F401

    logging.getLogger("distributed.client").setLevel(logging.INFO if verbose else logging.CRITICAL)


def _require(path: str, what: str = "scene") -> None:
    """Refuse a missing input before anything heavy is imported (fast feedback); a URL is checked when
    it is opened (GDAL's request says missing, refused or unreachable)."""
    from tiler.storage import is_url

    if not is_url(path) and not os.path.exists(path):
        raise SceneReadError(f"{what} {path!r} does not exist; check the path")


def _guard(outputs: dict, inputs: list, overwrite: bool, work_dir: Optional[str] = None):
    """Check and lock every output of a command before any work (tiler.destination)."""
    from tiler.destination import guard_outputs

    return guard_outputs(outputs, inputs=inputs, overwrite=overwrite, work_dir=work_dir)


def _work_dir(f):
    return click.option(
        "--work-dir", type=click.Path(file_okay=False), default=None, envvar="TILER_WORK_DIR",
        help="Local folder where outputs bound for object storage (s3://...) are written, verified and kept "
             "in parts until uploaded; a rerun resumes from it. [default: ~/.cache/tiler/work; env: "
             "TILER_WORK_DIR]")(f)


def _json(spec: Optional[str]):
    from tiler.destination import JSON_SUFFIXES

    return None if spec is None else (spec, JSON_SUFFIXES)


def _geotiff(spec: str):
    from tiler.destination import GEOTIFF_SUFFIXES

    return (spec, GEOTIFF_SUFFIXES)


def _vector(spec: Optional[str]):
    from tiler.sinks import VECTOR_FORMATS, vector_format

    if spec is None:
        return None
    vector_format(spec)  # an unknown extension, or GeoParquet without pyarrow: say so before any work
    return (spec, tuple(VECTOR_FORMATS))


def _bands_option(f):
    return click.option("--bands", default=None, help="1-based scene band per model channel, e.g. 3,2,1.")(f)


def _input_scale_option(f):
    return click.option("--input-scale", "input_scale", multiple=True, metavar="SCALE[,OFFSET]",
                        help="Map scene values into the model's range before its normalisation: value * SCALE + "
                             "OFFSET. Once for all band channels, or once per model channel (e.g. 0.0625 for 12-bit "
                             "data and an 8-bit model).")(f)


def _resample_option(f):
    """``--resample auto|off``: the processing grid at the model's pixel size, or the scene's grid."""
    return config_option("InferenceConfig", "resample", "--resample",
                         help="Where the model records the pixel size of its training imagery and the scene's "
                              "differs by more than 5 %: read the scene resampled onto that pixel size (averaged "
                              "when coarser) and run there (auto), or run on the scene's grid (off).")(f)


def _patch_options(f):
    """``--patch-size`` and ``--overlap`` (the patch grid; default the model's recommendation)."""
    f = click.option("--overlap", type=float, default=None,
                     help="Patch overlap as a fraction of the patch, in [0, 1) (default: the model's "
                          "recommendation, else 0.5).")(f)
    return click.option("--patch-size", type=int, default=None,
                        help="Patch side in pixels (default: the model's recommendation, else its training "
                             "patch).")(f)


def _strip_rows_option(f):
    return config_option("StreamConfig", "strip_rows", "--strip-rows", type=int, help="Scene rows per strip.")(f)


def _co_option(f):
    return click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                        help="GeoTIFF creation option (repeatable), e.g. --co COMPRESS=ZSTD.")(f)


def _cluster_options(what: str):
    """``--workers`` and ``--scheduler``: where ``what`` (the parts, the trials) run."""
    def decorate(f):
        f = click.option("--scheduler", default=None, metavar="ADDRESS",
                         help=f"Run {what} on an existing dask cluster (tcp://host:8786); its workers must see "
                              "the inputs, the model and the output folder at the same paths.")(f)
        return click.option("--workers", type=int, default=None,
                            help=f"Run {what} on a local dask cluster of N worker processes.")(f)
    return decorate


def _cog(f):
    return click.option("--cog", is_flag=True,
                        help="Write a Cloud-Optimized GeoTIFF: internal tiled overviews (mode for class maps, "
                             "average for probabilities and indices).")(f)


def _polygon_options(f):
    f = config_option("VectorConfig", "simplify", "--simplify", type=float, metavar="TOL",
                     help="Simplify polygons by TOL (CRS units, pixels where not georeferenced), shared edges "
                          "kept: no gaps or overlaps between neighbours.")(f)
    f = config_option("VectorConfig", "min_probability", "--min-probability", type=float, metavar="P",
                     help="Drop regions whose mean probability of their class is below P (each polygon's "
                          "mean_probability attribute).")(f)
    f = config_option("VectorConfig", "min_area", "--min-area", type=float,
                     help="Drop regions smaller than this (m² where the CRS is projected, geodesic m² where it is "
                          "geographic, else pixels).")(f)
    f = config_option("VectorConfig", "connectivity", "--connectivity",
                     help="Pixels of a region joined by edges (4) or edges and corners (8).")(f)
    f = click.option("--classes", default=None, metavar="NAME,...",
                     help="Classes to write as polygons (default: all but a background class).")(f)
    return f


def _vector_config(classes, connectivity, min_area, simplify, min_probability=0.0):
    from tiler.config import VectorConfig

    return VectorConfig(classes=classes, connectivity=connectivity, min_area=min_area, simplify=simplify,
                        min_probability=min_probability)


def _scene_inputs(scene: str) -> list:
    from tiler.scene import scene_inputs

    return scene_inputs(scene)


def _model_path(model: Optional[str]) -> str:
    """The file of ``--model``: a path, a registered name (``tiler models``), or the bundled model."""
    if model is not None:
        from tiler.model import resolve_model_path

        return resolve_model_path(model)
    from tiler.model import DEFAULT_MODEL_PATH

    return os.fspath(DEFAULT_MODEL_PATH)


def _write_json(dest, doc: dict) -> None:
    if dest is not None:
        dest.write_text(json.dumps(doc, indent=2, default=str))


def _int_list(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--bands expects comma-separated 1-based band indexes such as 1,2,3, got {text!r}") from None
