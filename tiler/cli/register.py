"""``tiler register``: estimate each band group's misalignment."""

from __future__ import annotations

import click

from tiler.cli._common import (
    _guard,
    _handle_errors,
    _json,
    _overwrite,
    _reference,
    _registration_options,
    _require,
    _scene_inputs,
    _verbosity,
    _write_json,
)
from tiler.errors import RegistrationError


@click.command()
@click.argument("scene", type=click.Path(dir_okay=True))
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="Write the registration (every window included) as JSON here.")
@_reference
@_registration_options(switch=False, aliases=(("--grid",), ("--window",)))
@_overwrite
@_verbosity
@_handle_errors
def register(scene, report, reference, registration_model, registration_grid, registration_window, overwrite,
             quiet, verbose):
    """Estimate each band group's misalignment against the reference grid of SCENE.

    Prints per group: the shift in pixels of the group, of the reference and in
    metres, the model, windows used and rejected, residual spread and time.
    Exits with code 2 when a group cannot be registered (the table is
    printed; no --report is written).
    """
    _require(scene)
    with _guard({"--report": _json(report)}, _scene_inputs(scene), overwrite) as guard:
        from tiler.registration import register_scene
        from tiler.scene import open_scene

        with open_scene(scene, reference=reference) as sc:
            reg = register_scene(sc, model=registration_model, grid=registration_grid, window=registration_window)
            summary = {"scene": sc.describe(), **reg.to_dict()}
        click.echo(format_registration(reg))
        if reg.failures:  # the table above is the diagnosis; no --report is left on a failure
            raise RegistrationError(reg.failure_message(
                "Check the scene (clouds, nodata, wrong band names) or try --registration-window/-grid"))
        _write_json(guard["--report"], summary)


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
    for g in reg.groups.values():
        if g.status in ("reference", "skipped") or not g.window_size:
            continue
        sigma = g.shift_sigma_group_px
        lines.append(f"  {g.group}: {g.window_grid[0]} x {g.window_grid[1]} windows of {g.window_size} px; "
                     f"clouds: {g.cloud_screen}"
                     + (f"; shift +- ({sigma[0]:.3f}, {sigma[1]:.3f}) group px" if g.status == "ok" else "")
                     + (f"; {g.model_reason}" if g.model_reason else ""))
        lines += [f"  {g.group}: note: {n}" for n in g.notes]
    return "\n".join(lines)
