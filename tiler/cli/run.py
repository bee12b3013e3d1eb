"""``tiler run``: segment a scene into a GeoTIFF and/or polygons."""

from __future__ import annotations

import click

from tiler.cli._common import (
    _Progress, _cog, _geotiff, _guard, _handle_errors, _int_list, _json, _model, _model_path, _overwrite,
    _polygon_options, _reference, _registration_model, _require, _scene_inputs, _vector, _vector_config,
    _verbosity, _write_json,
)
from tiler.errors import UsageError


@click.command()
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
