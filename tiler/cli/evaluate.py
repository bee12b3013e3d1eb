"""``tiler evaluate``: score class maps against truth masks."""

from __future__ import annotations

import click

from tiler.cli._common import (
    _guard,
    _handle_errors,
    _json,
    _overwrite,
    _require,
    _scene_inputs,
    _verbosity,
    _write_json,
)
from tiler.errors import UsageError


@click.command()
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
