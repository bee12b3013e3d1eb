"""The ``tiler`` command: parse options, call one library function, report.

Exit codes (DESIGN.md): 0 success; 1 runtime failure; 2 bad usage or bad input;
3 partial failure in batch mode; 4 output failed its own verification.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import signal
import sys
from typing import Callable, Optional

import click

from tiler._logging import NOTICE
from tiler._version import __version__
from tiler.errors import OutputVerificationError, RegistrationError, SceneReadError, TilerError, UsageError

log = logging.getLogger("tiler")

EXIT_RUNTIME, EXIT_USAGE, EXIT_PARTIAL, EXIT_VERIFY = 1, 2, 3, 4
#: Exit status of a command stopped by SIGTERM (128 + 15, the shell's convention).
EXIT_TERMINATED = 128 + signal.SIGTERM
#: Exit status after Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so that every cleanup runs as for Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


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


def _model(f):
    return click.option("--model", "model", type=click.Path(dir_okay=False), default=None,
                        help="Model file (.keras, written by `tiler train`); default: the bundled model.")(f)


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


def _handle_errors(func: Callable) -> Callable:
    """Turn tiler's errors into one-line messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        verbose = kwargs.get("verbose", 0)
        _setup_logging(verbose, kwargs.get("quiet", False))
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            _fail(exc, EXIT_USAGE, verbose)
        except OutputVerificationError as exc:
            _fail(exc, EXIT_VERIFY, verbose)
        except TilerError as exc:
            _fail(exc, EXIT_RUNTIME, verbose)
        except Terminated:
            click.echo("Terminated (SIGTERM); no output was left behind.", err=True)
            sys.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("Interrupted; no output was left behind.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # an unexpected failure: say so, traceback with -v
            _fail(exc, EXIT_RUNTIME, verbose, unexpected=True)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _fail(exc: BaseException, code: int, verbose: int, *, unexpected: bool = False) -> None:
    if verbose:
        log.exception("failed")
    prefix = f"Error ({type(exc).__name__}): " if unexpected else "Error: "
    click.echo(prefix + str(exc), err=True)
    sys.exit(code)


class _Progress:
    """A tqdm bar on stderr, silent with -q or when stderr is not a terminal."""

    def __init__(self, quiet: bool, unit: str, desc: str) -> None:
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _reference(f):
    return click.option("--reference", default=None,
                        help="Band group whose grid is the reference (output) grid; default the finest.")(f)


def _registration_model(f):
    return click.option("--registration-model", type=click.Choice(["auto", "translation", "affine"]),
                        default="auto", show_default=True,
                        help="Displacement model: a translation, an affine where the shift varies across the "
                             "scene, or auto (affine only where it is clearly better).")(f)


def _require(path: str, what: str = "scene") -> None:
    """Refuse a missing input before anything heavy is imported (fast feedback)."""
    if not os.path.exists(path):
        raise SceneReadError(f"{what} {path!r} does not exist; check the path")


def _guard(outputs: dict, inputs: list, overwrite: bool):
    """Check and lock every output of a command before any work (tiler.destination)."""
    from tiler.destination import guard_outputs

    return guard_outputs(outputs, inputs=inputs, overwrite=overwrite)


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


def _cog(f):
    return click.option("--cog", is_flag=True,
                        help="Write a Cloud-Optimized GeoTIFF: internal tiled overviews (mode for class maps, "
                             "average for probabilities and indices).")(f)


def _polygon_options(f):
    f = click.option("--simplify", type=float, default=0.0, show_default=True, metavar="TOL",
                     help="Simplify polygons by TOL (CRS units, pixels where not georeferenced), shared edges "
                          "kept: no gaps or overlaps between neighbours.")(f)
    f = click.option("--min-area", type=float, default=0.0, show_default=True,
                     help="Drop regions smaller than this (m² where the CRS is projected, else pixels).")(f)
    f = click.option("--connectivity", type=click.Choice(["4", "8"]), default="4", show_default=True,
                     help="Pixels of a region joined by edges (4) or edges and corners (8).")(f)
    f = click.option("--classes", default=None, metavar="NAME,...",
                     help="Classes to write as polygons (default: all but a background class).")(f)
    return f


def _vector_config(classes, connectivity, min_area, simplify):
    from tiler.config import VectorConfig

    return VectorConfig(classes=classes, connectivity=int(connectivity), min_area=min_area, simplify=simplify)


def _scene_inputs(scene: str) -> list:
    from tiler.destination import scene_inputs

    return scene_inputs(scene)


def _model_path(model: Optional[str]) -> str:
    if model is not None:
        _require(model, "model file")
        return model
    from tiler.model._file import DEFAULT_MODEL_PATH

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


# ---------------------------------------------------------------- commands

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tiler")
def main() -> None:
    """tiler: segment very large satellite scenes with a U-Net, streamed and seamless."""


@main.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Output GeoTIFF (class map, or probabilities with --output probability).")
@click.option("--vector", type=click.Path(dir_okay=False), default=None,
              help="Also (or only) write polygons of the class map here: .gpkg, .geojson, .fgb, .parquet, or "
                   ".csv (image_id,class,multipolygon_wkt).")
@_model
@click.option("--patch-size", type=int, default=None, help="Patch side in pixels (default: the model's).")
@click.option("--overlap", type=float, default=0.5, show_default=True,
              help="Patch overlap as a fraction of the patch, in [0, 1).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Patches per network call.")
@click.option("--output", type=click.Choice(["class", "probability"]), default="class", show_default=True,
              help="uint8 class map with a colour table, or probability per class.")
@click.option("--probability-dtype", type=click.Choice(["float32", "uint8"]), default="float32",
              show_default=True,
              help="Probabilities as float32 (nodata NaN) or uint8 scaled 0-255 (a quarter of the disk; nodata in "
                   "the mask band).")
@_cog
@click.option("--window", default="spline", show_default=True,
              help="Blending window: spline, hann, triangle, gaussian or boxcar.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation: mirror, or all 8 rotations and mirrors (d4), each undone exactly.")
@click.option("--tta-mean", type=click.Choice(["arithmetic", "geometric"]), default="arithmetic",
              show_default=True, help="Averaging of the TTA variants.")
@click.option("--tta-device", type=click.Choice(["graph", "host"]), default="graph", show_default=True,
              help="Run the TTA rotations in the Keras graph (on the accelerator) or on the host.")
@click.option("--bands", default=None, help="1-based scene band per model channel, e.g. 3,2,1.")
@click.option("--strip-rows", type=int, default=512, show_default=True, help="Scene rows per strip.")
@_overwrite
@click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
              help="GeoTIFF creation option (repeatable), e.g. --co COMPRESS=ZSTD.")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON run report here.")
@_reference
@click.option("--registration", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="Register the band groups the model reads against the reference (auto), or place them by "
                   "georeferencing only (off).")
@_registration_model
@click.option("--input-scale", "input_scale", multiple=True, metavar="SCALE[,OFFSET]",
              help="Map scene values into the model's range before its normalisation: value * SCALE + OFFSET. "
                   "Once for all band channels, or once per model channel (e.g. 0.0625 for 12-bit data and an "
                   "8-bit model).")
@click.option("--force", is_flag=True,
              help="Predict even when the scene's values are far outside the model's training domain.")
@_polygon_options
@_verbosity
@_handle_errors
def run(scene, out, vector, model, patch_size, overlap, batch_size, output, probability_dtype, cog, window, tta,
        tta_mean, tta_device, bands, strip_rows, overwrite, creation_options, report, reference, registration,
        registration_model, input_scale, force, classes, connectivity, min_area, simplify, quiet, verbose):
    """Segment SCENE into a georeferenced GeoTIFF mask and/or polygons, streaming strip by strip.

    SCENE is a raster, a scene manifest (.toml) or a Sentinel-2, Landsat-8/9 or
    WorldView-3 folder of band files. Give --out, --vector or both: both come
    from one pass of the network.
    """
    _require(scene)
    if out is None and vector is None:
        raise UsageError("nothing to write: give --out mask.tif and/or --vector polygons.gpkg")
    from tiler.config import InferenceConfig, OutputConfig, StreamConfig

    inference = InferenceConfig(patch_size=patch_size, overlap=overlap, batch_size=batch_size, window=window,
                                tta=tta, tta_mean=tta_mean, tta_device=tta_device, bands=_int_list(bands),
                                input_scale=list(input_scale), force=force, reference=reference,
                                registration=registration, registration_model=registration_model)
    streaming = StreamConfig(strip_rows=strip_rows)
    out_cfg = OutputConfig(kind=output, probability_dtype=probability_dtype,
                           creation_options=list(creation_options), cog=cog)
    polygons = _vector_config(classes, connectivity, min_area, simplify)
    with _guard({"--out": _geotiff(out) if out else None, "--vector": _vector(vector), "--report": _json(report)},
                [*_scene_inputs(scene), _model_path(model)], overwrite) as guard:
        from tiler.pipeline import run_scene

        bar = _Progress(quiet, "patch", "predict")
        try:
            result = run_scene(scene, guard["--out"], vector=guard["--vector"], model=model, inference=inference,
                               streaming=streaming, output=out_cfg, polygons=polygons, overwrite=overwrite,
                               progress=bar)
        finally:
            bar.close()
        _write_json(guard["--report"], result.to_dict())
    if not quiet:
        wrote = [p for p in (result.out, result.vector and result.vector["path"]) if p]
        extra = (f", {sum(result.vector['features'].values())} polygons" if result.vector else "")
        click.echo(f"wrote {' and '.join(wrote)} ({result.scene['width']}x{result.scene['height']}, "
                   f"{result.patches['predicted']} patches{extra}, {result.seconds['total']:.1f} s)", err=True)


@main.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the registration (every window included) as JSON here.")
@_reference
@_registration_model
@click.option("--grid", type=int, default=8, show_default=True, help="Estimation windows per side.")
@click.option("--window", type=int, default=128, show_default=True,
              help="Window side in pixels of the coarser group of each pair.")
@_overwrite
@_verbosity
@_handle_errors
def register(scene, report, reference, registration_model, grid, window, overwrite, quiet, verbose):
    """Estimate each band group's misalignment against the reference grid of SCENE.

    Prints per group: the shift in pixels of the group, of the reference and in
    metres, the model, windows used and rejected, residual spread and time.
    Exits with code 2 when a group cannot be registered.
    """
    _require(scene)
    with _guard({"--report": _json(report)}, _scene_inputs(scene), overwrite) as guard:
        from tiler.registration import register_scene
        from tiler.scene import open_scene

        with open_scene(scene, reference=reference) as sc:
            reg = register_scene(sc, model=registration_model, grid=grid, window=window)
            summary = {"scene": sc.describe(), **reg.to_dict()}
        _write_json(guard["--report"], summary)
    click.echo(format_registration(reg))
    if reg.failures:
        raise RegistrationError("; ".join(f"group {g.group!r}: {g.reason}" for g in reg.failures))


def format_registration(reg) -> str:
    """A plain-text table of a :class:`tiler.registration.Registration`."""
    head = (f"{'group':<8} {'anchor':<8} {'status':<9} {'model':<11} {'shift group px (row, col)':>26} "
            f"{'shift ref px':>17} {'shift m':>17} {'used':>4} {'rms ref px':>10} {'s':>5}  compared / rejected")
    lines = [f"reference grid: group {reg.reference!r}", head]
    for g in reg.groups.values():
        if g.status == "reference":
            continue
        def pair(v, nd=3):
            return "-" if v is None else f"({v[0]:+.{nd}f}, {v[1]:+.{nd}f})"
        rejected = ", ".join(f"{n} {k}" for k, n in sorted(g.rejected.items())) or "none"
        lines.append(
            f"{g.group:<8} {str(g.anchor):<8} {g.status:<9} {str(g.model or '-'):<11} "
            f"{pair(g.shift_group_px if g.status == 'ok' else None):>26} "
            f"{pair(g.shift_reference_px if g.status == 'ok' else None):>17} "
            f"{pair(g.shift_m if g.status == 'ok' else None, 2):>17} {g.windows_used:>4} "
            f"{g.residual_rms:>10.3f} {g.seconds:>5.2f}  {g.match or '-'} / rejected: {rejected}"
            + (f"  [{g.reason}]" if g.reason else ""))
    return "\n".join(lines)


@main.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@_out
@click.option("--index", "indices", multiple=True, required=True, metavar="NAME",
              help="Spectral index to compute (repeatable, in band order): ndvi, ndwi, ndmi, mndwi, savi, evi, "
                   "ndre, ccci, ndbi.")
@click.option("--param", "params", multiple=True, metavar="INDEX.NAME=VALUE",
              help="Index parameter override (repeatable), e.g. --param savi.L=1.0.")
@click.option("--strip-rows", type=int, default=512, show_default=True, help="Rows computed per strip.")
@_overwrite
@click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
              help="GeoTIFF creation option (repeatable).")
@_cog
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@_reference
@click.option("--registration", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="Register the band groups the indices read (auto) or not (off).")
@_registration_model
@_verbosity
@_handle_errors
def indices(scene, out, indices, params, strip_rows, overwrite, creation_options, cog, report, reference,
            registration, registration_model, quiet, verbose):
    """Write spectral indices of SCENE as a float32 GeoTIFF, one band per index.

    Band descriptions are the index names, nodata is NaN (nodata or saturated
    input, zero denominator); the radiometric scaling applied and each index's
    formula and parameters are in the file's metadata.
    """
    _require(scene)
    overrides: dict[str, dict[str, float]] = {}
    for item in params:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        try:
            if not (sep and dot):
                raise ValueError
            overrides.setdefault(name.strip().lower(), {})[param.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--param expects INDEX.NAME=VALUE such as savi.L=1.0, got {item!r}") from None
    with _guard({"--out": _geotiff(out), "--report": _json(report)}, _scene_inputs(scene), overwrite) as guard:
        from tiler.pipeline import index_scene

        bar = _Progress(quiet, "row", "indices")
        try:
            result = index_scene(scene, guard["--out"], list(indices), params=overrides, strip_rows=strip_rows,
                                 overwrite=overwrite, creation_options=list(creation_options), cog=cog,
                                 reference=reference, registration=registration,
                                 registration_model=registration_model, progress=bar)
        finally:
            bar.close()
        _write_json(guard["--report"], result.to_dict())
    if not quiet:
        click.echo(f"wrote {result.out} ({', '.join(result.indices)}; {result.seconds['total']:.1f} s)", err=True)


@main.command()
@click.argument("mask", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Polygon file: .gpkg, .geojson, .fgb, .parquet, or .csv (image_id,class,multipolygon_wkt).")
@_polygon_options
@_overwrite
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@_verbosity
@_handle_errors
def vectorize(mask, out, classes, connectivity, min_area, simplify, overwrite, report, quiet, verbose):
    """Write the polygons of the class map MASK: one per connected region of a class.

    MASK is a `tiler run` class map (class names from its metadata) or any
    single-band 8/16-bit label GeoTIFF (class values as names, e.g. --classes 1,3).
    Polygons are in MASK's CRS with class, class_index, area and perimeter.
    """
    _require(mask, "mask")
    polygons = _vector_config(classes, connectivity, min_area, simplify)
    with _guard({"--out": _vector(out), "--report": _json(report)}, [mask], overwrite) as guard:
        from tiler.vectorize import vectorize_mask

        bar = _Progress(quiet, "block", "vectorize")
        try:
            result = vectorize_mask(mask, guard["--out"], polygons=polygons, overwrite=overwrite, progress=bar)
        finally:
            bar.close()
        _write_json(guard["--report"], result)
    if not quiet:
        counts = ", ".join(f"{n} {c}" for n, c in result["features"].items())
        click.echo(f"wrote {result['out']} ({counts}; {result['seconds']['total']:.1f} s)", err=True)


@main.command()
@click.argument("images")
@click.argument("masks", required=False)
@_out
@click.option("--classes", "classes_file", required=True, type=click.Path(dir_okay=False),
              help="Class scheme JSON (names, mask colours, ignored colours).")
@click.option("--val-images", required=True, help="Validation image folder(s): whole held-out images.")
@click.option("--val-masks", default=None, help="Validation mask folder(s) (not with --labels).")
@click.option("--labels", "vector_labels", type=click.Path(dir_okay=False), default=None,
              help="Polygon labels instead of masks, for training and validation images: any vector file "
                   "(GeoPackage, GeoJSON, FlatGeobuf, Shapefile) or a WKT CSV (image_id,class,multipolygon_wkt).")
@click.option("--label-field", default="class", show_default=True,
              help="The polygons' attribute holding the class name or index.")
@click.option("--channels", default=None,
              help="Model input channels: band names and spectral index names, e.g. red,green,blue,nir,ndwi "
                   "(default: the images' bands).")
@click.option("--band-names", default=None, help="Names of the images' bands where the files do not name them, "
                                                  "e.g. red,green,blue,nir.")
@click.option("--epochs", type=int, default=50, show_default=True)
@click.option("--steps-per-epoch", type=int, default=100, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--patch-size", type=int, default=256, show_default=True)
@click.option("--depth", type=int, default=4, show_default=True)
@click.option("--base-filters", type=int, default=16, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--patience", type=int, default=8, show_default=True, help="Early-stopping patience in epochs.")
@click.option("--val-overlap", type=float, default=0.25, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop after this many minutes of training.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Start from this tiler model's weights and normalisation (fine-tuning).")
@_overwrite
@_verbosity
@_handle_errors
def train(images, masks, out, classes_file, val_images, val_masks, vector_labels, label_field, channels, band_names,
          epochs, steps_per_epoch, batch_size, patch_size, depth, base_filters, learning_rate, patience, val_overlap,
          max_minutes, seed, init, overwrite, quiet, verbose):
    """Train a U-Net on IMAGES and MASKS (folders or quoted glob patterns of folders).

    With --labels POLYGONS instead of MASKS, each image's labels are burnt from
    the polygons on its grid (by CRS where georeferenced, else pixel coordinates).
    """
    from tiler.labels import LabelScheme
    from tiler.model._train import TrainConfig
    from tiler.model._train import find_images, find_pairs
    from tiler.model._train import train as train_model

    if vector_labels is not None:
        if masks is not None or val_masks is not None:
            raise UsageError("give masks (MASKS, --val-masks) or --labels polygons, not both")
        _require(vector_labels, "label file")
        pairs = find_images(images) + find_images(val_images)
    elif masks is None or val_masks is None:
        raise UsageError("give MASKS and --val-masks (label mask folders), or --labels POLYGONS")
    else:
        pairs = find_pairs(images, masks) + find_pairs(val_images, val_masks)
    inputs = [f for pair in pairs for f in pair if f] + [classes_file] + ([init] if init else []) \
        + ([vector_labels] if vector_labels else [])
    guard = _guard({"--out": (out, (".keras",))}, inputs, overwrite)
    config = TrainConfig(patch_size=patch_size, batch_size=batch_size, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, learning_rate=learning_rate, patience=patience,
                         depth=depth, base_filters=base_filters, val_overlap=val_overlap,
                         max_minutes=max_minutes, seed=seed)

    def on_epoch(row: dict) -> None:
        if not quiet:
            ious = " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=-" for k, v in row["val_iou"].items())
            click.echo(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val mIoU {row['val_mean_iou']:.4f}"
                       f"  [{ious}]  {row['elapsed_minutes']:.1f} min{'  *best' if row['best'] else ''}",
                       err=True)

    command = "tiler train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    with guard:
        report = train_model(images, masks, guard["--out"], labels=LabelScheme.from_file(classes_file),
                             val_images=val_images, val_masks=val_masks, vector_labels=vector_labels,
                             label_field=label_field, channels=channels.split(",") if channels else None,
                             band_names=band_names.split(",") if band_names else None,
                             config=config, on_epoch=on_epoch, command=command, init=init)
    if not quiet:
        click.echo(f"best epoch {report['best_epoch']}: val mean IoU "
                   f"{report['val_scores']['mean_iou']:.4f}; saved {out}", err=True)


@main.command()
@click.argument("pred", type=click.Path(exists=False))
@click.argument("truth", type=click.Path(exists=False))
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), default=None,
              help="Class scheme JSON; default: the classes and colours stored in PRED.")
@click.option("--truth-values", default=None, metavar="V0,V1,...",
              help="Integer truth-mask value of each class, in class order, e.g. 0,255 for a 0/255 footprint mask.")
@click.option("--allow-ignored", is_flag=True,
              help="Score even when more than 1 %% of truth pixels are ignored or of prediction values are no class.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the scores as JSON here.")
@_overwrite
@_verbosity
@_handle_errors
def evaluate(pred, truth, classes_file, truth_values, allow_ignored, json_out, overwrite, quiet, verbose):
    """Score PRED (a class map from `tiler run`, or a folder of them) against TRUTH masks."""
    values = None
    if truth_values is not None:
        try:
            values = [int(v) for v in truth_values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--truth-values expects integers, one per class, e.g. 0,255; got {truth_values!r}") \
                from None
    _require(pred, "prediction")
    _require(truth, "truth")
    inputs = [*_scene_inputs(pred), *_scene_inputs(truth)] + ([classes_file] if classes_file else [])
    with _guard({"--json": _json(json_out)}, inputs, overwrite) as guard:
        from tiler.evaluate import evaluate_masks, format_table

        result = evaluate_masks(pred, truth, classes=classes_file, truth_values=values, allow_ignored=allow_ignored)
        _write_json(guard["--json"], result)
    click.echo(format_table(result))


@main.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("--model", "model", default=None,
              help="Also show how this model's channels would be built, the input-domain verdict and the "
                   "patch count ('default' for the bundled model).")
@_reference
@click.option("--bands", default=None, help="1-based scene band per model channel, e.g. 3,2,1.")
@click.option("--input-scale", "input_scale", multiple=True, metavar="SCALE[,OFFSET]",
              help="As for `tiler run`.")
@click.option("--overlap", type=float, default=0.5, show_default=True, help="For the patch estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_verbosity
@_handle_errors
def info(scene, model, reference, bands, input_scale, overlap, as_json, quiet, verbose):
    """Describe SCENE (size, CRS, band groups, dtypes, nodata, scaling, sampled values) before running it."""
    _require(scene)
    if model not in (None, "default"):
        _require(model, "model file")
    from tiler.info import format_info, scene_info

    doc = scene_info(scene, model=model, reference=reference, bands=_int_list(bands),
                     input_scale=list(input_scale), overlap=overlap)
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else format_info(doc))


@main.group()
def bench() -> None:
    """Benchmarks that print a table."""


@bench.command("blend")
@click.option("--sizes", default="2048,4096", show_default=True, help="Scene sides in pixels.")
@click.option("--classes", default="1,6", show_default=True, help="Output classes K.")
@click.option("--tta", "ttas", default="none,d4", show_default=True, help="TTA modes.")
@click.option("--threads", default="1,0", show_default=True, help="numba threads (0 = all).")
@click.option("--large", type=int, default=16384, show_default=True,
              help="Also run single-thread K=1 at this size (0 to skip).")
@click.option("--patch-size", type=int, default=256, show_default=True)
@click.option("--overlap", type=float, default=0.5, show_default=True)
@click.option("--window", default="spline", show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also time the plain-NumPy whole-image blend.")
@_verbosity
@_handle_errors
def bench_blend(sizes, classes, ttas, threads, large, patch_size, overlap, window, baseline, quiet, verbose):
    """Blend-only throughput, peak memory and max abs error (stand-in model time excluded)."""
    from tiler.bench import format_table, run_blend_benchmarks

    def ints(text: str) -> list[int]:
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"expected comma-separated integers, got {text!r}") from None

    rows = run_blend_benchmarks(ints(sizes), ints(classes), [t.strip() for t in ttas.split(",")], ints(threads),
                                baseline=baseline, large=large or None, patch_size=patch_size,
                                overlap=overlap, window=window)
    click.echo(f"patch {patch_size}, overlap {overlap}, window {window}; blend-only Mpx/s of scene")
    click.echo(format_table(rows))


if __name__ == "__main__":  # pragma: no cover
    main()
