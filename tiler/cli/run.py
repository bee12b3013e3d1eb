"""``tiler run``: segment a scene into a GeoTIFF and/or polygons, in one process or in parts over workers."""

from __future__ import annotations

import os

import click

from tiler.cli._common import (
    _dask_client_logs,
    _geotiff,
    _guard,
    _handle_errors,
    _json,
    _model_path,
    _polygon_options,
    _Progress,
    _require,
    _scene_inputs,
    _vector,
    _vector_config,
    _verbosity,
    _work_dir,
    _write_json,
    stage,
)
from tiler.cli._runopts import configs_from_options, run_options, scale_options
from tiler.errors import UsageError


@click.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Output GeoTIFF (class map, or probabilities with --output probability).")
@click.option("--vector", type=click.Path(dir_okay=False), default=None,
              help="Also (or only) write polygons of the class map here: .gpkg, .geojson, .fgb, .parquet, or "
                   ".csv (image_id,class,multipolygon_wkt).")
@run_options
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON run report here.")
@click.option("--html", type=click.Path(dir_okay=False), default=None,
              help="Also write a quick-look page here (`tiler view`: one offline HTML file; needs --out).")
@click.option("--stac-item", type=click.Path(dir_okay=False), default=None,
              help="Also write a STAC Item describing the result here (.json; needs --out): the mask with its "
                   "classes, the polygons, report and page, the model (STAC MLM) and a derived_from link to "
                   "the scene.")
@_polygon_options
@scale_options
@_work_dir
@_verbosity
@_handle_errors
def run(scene, out, vector, report, html, stac_item, classes, connectivity, min_area, min_probability, simplify,
        workers, scheduler, parts, worker_timeout, work_dir, quiet, verbose, **kw):
    """Segment SCENE into a georeferenced GeoTIFF mask and/or polygons, streaming strip by strip.

    SCENE is a raster, a scene manifest (.toml), a STAC Item (.json) or a
    Sentinel-2, Landsat-8/9 or WorldView-3 folder of band files; a raster,
    manifest or Item may be a URL (https://, s3://, gs://, az://, /vsi...).
    Give --out, --vector or both: both come from one pass of the network; any
    output may be an s3:// URL (written in --work-dir, uploaded whole at the
    end). A large scene (or any, with --parts/--workers/--scheduler) is
    computed in parts beside the output and resumed after a crash by running
    the same command again.
    """
    from tiler.scene import split_scene

    _require(split_scene(scene)[0])
    if out is None and vector is None:
        raise UsageError("nothing to write: give --out mask.tif and/or --vector polygons.gpkg")
    inference, streaming, out_cfg = configs_from_options(kw)
    polygons = _vector_config(classes, connectivity, min_area, simplify, min_probability)
    model, overwrite = kw["model"], kw["overwrite"]
    if html and not out:
        raise UsageError("--html shows the class map: give --out mask.tif too")
    if stac_item and not out:
        raise UsageError("--stac-item describes the class map: give --out mask.tif too")
    from tiler.pipeline import resolve_run

    # The run resolved once (the model's metadata, the options checked against it); everything below uses it.
    spec = resolve_run(model=_model_path(model), inference=inference, streaming=streaming, output=out_cfg,
                       polygons=polygons, raster=out is not None, vector=vector is not None)
    with _guard({"--out": _geotiff(out) if out else None, "--vector": _vector(vector),
                 "--html": (html, (".html", ".htm")) if html else None, "--report": _json(report),
                 "--stac-item": _json(stac_item)},
                [*_scene_inputs(scene), spec.model], overwrite, work_dir) as guard:
        from tiler.distributed import run as run_parts

        _dask_client_logs(scheduler, verbose)
        bar = _Progress(quiet, "patch", "predict")
        parts_bar = _Progress(quiet or (workers is None and scheduler is None), "part", "parts")
        try:
            with stage("predicting and writing the products"):
                result = run_parts(scene, guard["--out"], vector=guard["--vector"], spec=spec, overwrite=overwrite,
                                   parts=parts, workers=workers, scheduler=scheduler, progress=bar,
                                   parts_progress=parts_bar, worker_timeout=worker_timeout)
        finally:
            bar.close()
            parts_bar.close()
        if guard["--html"] is not None:
            from tiler.view import build_page, page_scene, write_page

            with stage(f"writing the page {guard['--html'].location}"):
                mask = guard["--out"].current  # the staged class map: every output is renamed into place at the end
                write_page(guard["--html"], build_page(mask, scene=page_scene(scene, mask),
                                                       vector=guard["--vector"] and guard["--vector"].current,
                                                       report=result.to_dict(),
                                                       title=os.path.basename(guard["--out"].location)),
                           overwrite=overwrite)
        with stage(f"writing the report {guard['--report'] and guard['--report'].location}"):
            _write_json(guard["--report"], result.to_dict())
        if guard["--stac-item"] is not None:
            from tiler.catalog import result_item

            with stage(f"writing the STAC Item {guard['--stac-item'].location}"):
                located = {k: guard[k] and guard[k].location for k in ("--vector", "--report", "--html")}
                _write_json(guard["--stac-item"], result_item(
                    scene=scene, mask=guard["--out"].current, mask_href=guard["--out"].location, info=spec.info,
                    model_name=model or "default", model_href=spec.model, cog=out_cfg.cog,
                    vector_href=located["--vector"], report_href=located["--report"], page_href=located["--html"],
                    report=result.to_dict()))
    if not quiet:
        extra = (f", {sum(result.vector['features'].values())} polygons" if result.vector else "")
        if result.parts:
            extra += (f", {result.parts['total']} parts ({result.parts['reused']} from an interrupted run) on "
                      f"{len(result.parts['workers'])} worker(s)")
        click.echo(f"wrote {', '.join(guard.committed)} ({result.scene['width']}x{result.scene['height']}, "
                   f"{result.patches['predicted']} patches{extra}, {result.seconds['total']:.1f} s)", err=True)
