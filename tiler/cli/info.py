"""``tiler info``: describe a scene and what tiler would do with it."""

from __future__ import annotations

import json

import click

from tiler.cli._common import (
    _bands_option,
    _handle_errors,
    _input_scale_option,
    _int_list,
    _model_path,
    _patch_options,
    _reference,
    _require,
    _resample_option,
    _verbosity,
)


@click.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("--model", "model", default=None,
              help="Also show how this model's channels would be built, the input-domain verdict and the "
                   "patch count ('default' for the bundled model).")
@_reference
@_bands_option
@_input_scale_option
@_patch_options
@_resample_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_verbosity
@_handle_errors
def info(scene, model, reference, bands, input_scale, patch_size, overlap, resample, as_json, quiet, verbose):
    """Describe SCENE (size, CRS, band groups, dtypes, nodata, scaling, sampled values) before running it."""
    _require(scene)
    if model is not None:
        _model_path(model)  # a file or a registered name, else refused before any work
    from tiler.info import format_info, scene_info

    doc = scene_info(scene, model=model, reference=reference, bands=_int_list(bands),
                     input_scale=list(input_scale), overlap=overlap, patch_size=patch_size, resample=resample)
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else format_info(doc))
