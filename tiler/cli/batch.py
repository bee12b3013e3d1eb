"""``tiler batch``: segment an archive of scenes on dask workers, resumable."""

from __future__ import annotations

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
)
from tiler.cli._runopts import configs_from_options, run_options, scale_options


@click.command()
@click.argument("inputs", nargs=-1, required=True)
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
def batch(inputs, out_dir, name, workers, scheduler, parts, worker_timeout, retries, on_error, report, work_dir, quiet,
          verbose, **kw):
    """Segment every scene of INPUTS into OUT_DIR, as tasks on dask workers.

    INPUTS are scenes (rasters, manifests, sensor folders, STAC Items), glob
    patterns, folders of scenes, text files listing scenes (one per line) and
    STAC ItemCollections or local Catalogs; rasters, lists and STAC documents
    may be URLs, and a quoted pattern over a bucket ('s3://bucket/scenes/*.tif')
    is listed through the store's API. Scenes whose output exists with
    this run's fingerprint (same inputs, model, options and version) are
    skipped, so running the same command again after a crash finishes the
    batch; large scenes are cut into parts spread over the workers.
    """
    inference, streaming, output = configs_from_options(kw)
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
        _write_json(guard["--report"], result.to_dict())
    c = result.counts
    if not quiet:
        click.echo(f"{c['done']} done, {c['skipped']} skipped (already done), {c['failed']} failed "
                   f"({len(result.scenes)} scenes, {result.seconds:.1f} s)", err=True)
    for entry in result.failed:
        click.echo(f"failed: {entry['scene']}: {entry['error']}", err=True)
    if c["failed"]:
        raise SystemExit(EXIT_PARTIAL)
