"""Errors raised by tiler.

Every error derives from :class:`TilerError` and also from the matching builtin,
so callers can catch either (``except TilerError`` or ``except ValueError``).
The CLI maps :class:`UsageError` subclasses to exit code 2 and
:class:`OutputVerificationError` to exit code 4; anything else is a runtime
failure (exit code 1).

Messages say what was wrong, show the offending value and name the fix.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

__all__ = [
    "in_stage",
    "stage_of",
    "describe_failure",
    "TilerError",
    "UsageError",
    "SceneReadError",
    "BandMismatchError",
    "ModelFileError",
    "PlanError",
    "OutputExistsError",
    "OutputPathError",
    "OutputBusyError",
    "OutputVerificationError",
    "DatasetError",
    "RegistrationError",
    "DomainError",
    "DiskFullError",
    "StorageAccessError",
    "StorageUnavailableError",
]


class TilerError(Exception):
    """Root of every error tiler raises on purpose."""


class UsageError(TilerError):
    """Bad usage or bad input: the CLI exits with code 2 and writes nothing."""


class SceneReadError(UsageError, OSError):
    """A scene is missing, unreadable or truncated."""


class BandMismatchError(UsageError, ValueError):
    """A scene does not provide the bands (channels) the model needs."""


class ModelFileError(UsageError, ValueError):
    """A model file is missing, not a Keras file, or lacks tiler's metadata."""


class PlanError(UsageError, ValueError):
    """Patch size, overlap, stride or strip options are inconsistent."""


class OutputExistsError(UsageError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""


class OutputPathError(UsageError, OSError):
    """The output folder does not exist or is not writable."""


class OutputBusyError(UsageError, OSError):
    """Another process is writing the same output now (its advisory lock is held)."""


class DatasetError(UsageError, ValueError):
    """Training or evaluation data is missing, unpaired or inconsistent."""


class RegistrationError(UsageError, ValueError):
    """Band groups could not be registered, or registration options are wrong."""


class OutputVerificationError(TilerError, OSError):
    """A finished output failed its own verification (CLI exit code 4)."""


class DomainError(UsageError, ValueError):
    """A scene's values are far outside the domain the model was trained on."""


class DiskFullError(TilerError, OSError):
    """The disk (or the file-size limit) filled while writing an output (exit code 1)."""


class StorageAccessError(UsageError, PermissionError):
    """An object store or HTTP server refused access (HTTP 401/403): missing or wrong credentials (exit code 2)."""


class StorageUnavailableError(TilerError, ConnectionError):
    """An object store or HTTP server did not answer, or answered with an error, after GDAL's or the client's
    retries (exit code 1: run again when it is back)."""


@contextmanager
def in_stage(name: str) -> Iterator[None]:
    """Record, on an unexpected error raised inside the block, the stage of the run that failed.

    The innermost stage wins (a failure while writing an output inside the
    run's stream is "writing OUT", not "predicting"). The stage travels with
    the exception, across a dask worker too (an exception's attributes are
    pickled with it), and :func:`describe_failure` names it.

    Parameters
    ----------
    name : str
        What was being done, as a message says it: ``"reading the scene"``,
        ``"predicting"``, ``"writing /out/mask.tif"``, ``"writing the polygons
        /out/m.gpkg"``.
    """
    try:
        yield
    except Exception as exc:
        if getattr(exc, "tiler_stage", None) is None:
            try:
                exc.tiler_stage = name
            except AttributeError:  # an exception type with slots: no stage recorded
                pass
        raise


def stage_of(exc: BaseException) -> Optional[str]:
    """The stage :func:`in_stage` recorded on ``exc``, or None."""
    return getattr(exc, "tiler_stage", None)


def describe_failure(exc: BaseException, default: Optional[str] = None) -> str:
    """One line for a failure: tiler's own message as it is; another error with the stage that failed.

    Parameters
    ----------
    exc : BaseException
    default : str, optional
        The stage to name where none was recorded.

    Returns
    -------
    str
        ``"writing /out/m.geojson failed: ModuleNotFoundError: No module named 'pyproj'"``.
    """
    if isinstance(exc, TilerError):
        return str(exc)
    where = stage_of(exc) or default
    what = f"{type(exc).__name__}: {exc}"
    return f"{where} failed: {what}" if where else what
