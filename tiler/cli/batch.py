"""``tiler batch``: segment an archive of scenes on dask workers, resumable."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional

import click

from tiler import _signals
from tiler.cli._common import (
    EXIT_PARTIAL,
    _dask_client_logs,
    _guard,
    _handle_errors,
    _json,
    _model_path,
    _Progress,
    _verbosity,
    _work_dir,
    _write_json,
    stage,
)
from tiler.cli._runopts import configs_from_options, run_options, scale_options
from tiler.errors import UsageError


def _bbox(text: Optional[str]) -> Optional[tuple[float, float, float, float]]:
    if text is None:
        return None
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--bbox {text!r}: give west,south,east,north in degrees, e.g. 54.9,24.9,55.3,25.3") from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s < n <= 90):
        raise UsageError(f"--bbox {text!r}: west and east in [-180, 180], south < north in [-90, 90] (degrees)")
    return w, s, e, n


def _searched(api, collections, bbox, when, query, max_items, list_only, work_dir) -> Optional[list]:
    """The scenes of a STAC API search (local copies of its Items), or None where nothing is to run."""
    from tiler.catalog import StacSearch, describe_items, keep_items, search_items
    from tiler.storage import default_work_dir

    search = StacSearch(api=api, collections=tuple(collections), bbox=_bbox(bbox), datetime=when,
                        query=tuple(query), max_items=max_items)
    items = search_items(search)
    if not items:
        click.echo(f"0 items matched the search of {search.to_dict()['api']}; nothing to run, nothing written",
                   err=True)
        return None
    if list_only:
        for line in describe_items(items):
            click.echo(line)
        return None
    key = hashlib.sha256(json.dumps(search.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return keep_items(items, os.path.join(work_dir or default_work_dir(), "stac", key))


@click.command()
@click.argument("inputs", nargs=-1, required=False)
@click.option("--stac-api", default=None, metavar="URL",
              help="Take the scenes from a search of this STAC API (every Item one scene, its band assets chosen "
                   "by the model's channels) instead of INPUTS; a STAC Item is written for every result.")
@click.option("--collection", "collections", multiple=True, metavar="ID",
              help="With --stac-api: search this collection (repeat for several).")
@click.option("--bbox", default=None, metavar="W,S,E,N",
              help="With --stac-api: Items intersecting this box (degrees, WGS 84).")
@click.option("--datetime", "when", default=None, metavar="A/B",
              help="With --stac-api: Items of this instant or interval (RFC 3339; '..' for an open end), e.g. "
                   "2024-06-01/2024-06-30.")
@click.option("--query", multiple=True, metavar="PROPERTY<VALUE",
              help="With --stac-api: a property filter, e.g. 'eo:cloud_cover<20' (operators < <= > >= = !=; "
                   "repeat for several).")
@click.option("--max-items", type=click.IntRange(min=1), default=None,
              help="With --stac-api: at most this many Items.")
@click.option("--list", "list_only", is_flag=True,
              help="Print the scenes that would run (with --stac-api: the Items, with their sizes) and write "
                   "nothing.")
@click.option("--stac-items", is_flag=True,
              help="Write a STAC Item beside every mask and a static catalogue, catalog.json, in --out-dir "
                   "(always with --stac-api).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder of the outputs (created if its parent exists), or an s3://bucket/prefix/ (each output "
                   "written in --work-dir and uploaded whole when its scene is done).")
@click.option("--name", default="{stem}.tif", show_default=True,
              help="Output file name: {stem} is the scene's file stem, folder name or STAC Item id; {model} the "
                   "model file's stem.")
@run_options
@scale_options
@click.option("--retries", type=int, default=0, show_default=True,
              help="Reruns of a task that failed with an I/O error.")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True,
              help="A failed scene is reported and the others go on (exit 3), or the batch stops (exit 1).")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write a JSON report here: per scene its status, seconds, pixels, parts, worker, peak "
                   "memory, registration shifts and error.")
@_work_dir
@_verbosity
@_handle_errors
def batch(inputs, stac_api, collections, bbox, when, query, max_items, list_only, stac_items, out_dir, name, workers,
          scheduler, parts, worker_timeout, retries, on_error, report, work_dir, quiet, verbose, **kw):
    """Segment every scene of INPUTS into OUT_DIR, as tasks on dask workers.

    INPUTS (or a STAC API search, --stac-api) are scenes (rasters, manifests, sensor folders, STAC Items), glob
    patterns, folders of scenes, text files listing scenes (one per line) and
    STAC ItemCollections or local Catalogs; rasters, lists and STAC documents
    may be URLs, and a quoted pattern over a bucket ('s3://bucket/scenes/*.tif')
    is listed through the store's API. Scenes whose output exists with
    this run's fingerprint (same inputs, model, options and version) are
    skipped, so running the same command again after a crash finishes the
    batch; large scenes are cut into parts spread over the workers.
    """
    inference, streaming, output = configs_from_options(kw)
    if stac_api is not None:
        if inputs:
            raise UsageError("give INPUTS or --stac-api, not both")
        inputs = _searched(stac_api, collections, bbox, when, query, max_items, list_only, work_dir)
        if inputs is None:
            return
    elif any((collections, bbox, when, query, max_items)):
        raise UsageError("--collection, --bbox, --datetime, --query and --max-items refine a --stac-api search; "
                         "give --stac-api URL")
    elif not inputs:
        raise UsageError("no scenes: give INPUTS (files, patterns, folders, lists, STAC documents) or --stac-api URL")
    elif list_only:
        from tiler.distributed import expand_inputs

        for scene in expand_inputs(list(inputs)):
            click.echo(scene)
        return
    with _guard({"--report": _json(report)}, [_model_path(kw["model"])], kw["overwrite"], work_dir) as guard:
        from tiler.distributed import BatchAborted, SchedulerLost
        from tiler.distributed import batch as run_batch

        _dask_client_logs(scheduler, verbose)
        bar = _Progress(quiet, "part", "batch")
        try:
            result = run_batch(list(inputs), out_dir, name=name, model=_model_path(kw["model"]),
                               inference=inference, streaming=streaming, output=output, overwrite=kw["overwrite"],
                               parts=parts, workers=workers, scheduler=scheduler, retries=retries,
                               on_error=on_error, progress=bar, worker_timeout=worker_timeout, work_dir=work_dir)
        except (BatchAborted, SchedulerLost) as exc:  # the report of what was done, failed, not started/finished
            if exc.report is not None:
                _write_json(guard["--report"], exc.report.to_dict())
                guard.commit()
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the finished scenes' masks stay, for the resume
            if _signals.outputs_written():
                _signals.keep("run the same command again to finish the batch: the scenes already done are "
                              "skipped")
            raise
        finally:
            bar.close()
        if stac_api is not None or stac_items:
            from tiler.catalog import publish_batch

            with stage("writing the STAC Items and catalog.json"):
                publish_batch(result.to_dict(), out_dir, model=_model_path(kw["model"]),
                              model_name=kw["model"] or "default", cog=output.cog, work_dir=work_dir)
        _write_json(guard["--report"], result.to_dict())
    c = result.counts
    if not quiet:
        click.echo(f"{c['done']} done, {c['skipped']} skipped (already done), {c['failed']} failed "
                   f"({len(result.scenes)} scenes, {result.seconds:.1f} s)", err=True)
    for entry in result.failed:
        click.echo(f"failed: {entry['scene']}: {entry['error']}", err=True)
    if c["failed"]:
        raise SystemExit(EXIT_PARTIAL)
