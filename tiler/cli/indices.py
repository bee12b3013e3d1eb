"""``tiler indices``: spectral indices into a GeoTIFF."""

from __future__ import annotations

import click

from tiler.cli._common import (
    _co_option,
    _cog,
    _geotiff,
    _guard,
    _handle_errors,
    _json,
    _out,
    _overwrite,
    _Progress,
    _reference,
    _registration_options,
    _require,
    _scene_inputs,
    _strip_rows_option,
    _verbosity,
    _write_json,
)
from tiler.errors import UsageError


@click.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@_out
@click.option("--index", "indices", multiple=True, required=True, metavar="NAME",
              help="Spectral index to compute (repeatable, in band order): ndvi, ndwi, ndmi, mndwi, savi, evi, "
                   "ndre, ccci, ndbi.")
@click.option("--param", "params", multiple=True, metavar="INDEX.NAME=VALUE",
              help="Index parameter override (repeatable), e.g. --param savi.L=1.0.")
@_strip_rows_option
@_overwrite
@_co_option
@_cog
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@_reference
@_registration_options()
@_verbosity
@_handle_errors
def indices(scene, out, indices, params, strip_rows, overwrite, creation_options, cog, report, reference,
            registration, registration_model, registration_grid, registration_window, quiet, verbose):
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
                                 registration_model=registration_model, registration_grid=registration_grid,
                                 registration_window=registration_window, progress=bar)
        finally:
            bar.close()
        _write_json(guard["--report"], result.to_dict())
    if not quiet:
        click.echo(f"wrote {result.out} ({', '.join(result.indices)}; {result.seconds['total']:.1f} s)", err=True)
