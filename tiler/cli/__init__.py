"""The ``tiler`` command: a click group, one module per command.

Each command only parses its options and calls one library function
(rasterio's ``rio`` conventions); the options shared by several commands,
the error handling (one-line messages, exit codes) and the progress bar are
defined once in :mod:`tiler.cli._common`.

Exit codes (DESIGN.md): 0 success; 1 runtime failure; 2 bad usage or bad input;
3 partial failure in batch mode; 4 output failed its own verification.
"""

from __future__ import annotations

import click

from tiler._version import __version__
from tiler.cli.batch import batch
from tiler.cli.bench import bench
from tiler.cli.evaluate import evaluate
from tiler.cli.export import export
from tiler.cli.indices import indices
from tiler.cli.info import info
from tiler.cli.models import models
from tiler.cli.register import format_registration, register
from tiler.cli.run import run
from tiler.cli.train import train
from tiler.cli.tune import tune
from tiler.cli.vectorize import vectorize
from tiler.cli.view import view

__all__ = ["main", "format_registration"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tiler")
def main() -> None:
    """tiler: segment very large satellite scenes with a U-Net, streamed and seamless."""


for _command in (run, batch, vectorize, view, indices, register, info, models, train, tune, evaluate, export,
                 bench):
    main.add_command(_command)
