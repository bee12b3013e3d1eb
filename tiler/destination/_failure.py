"""A failed write classified: a full disk, a file-size limit, or something else."""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence

from tiler.errors import (
    DiskFullError,
    OutputBusyError,
    OutputExistsError,
    OutputPathError,
    OutputVerificationError,
    TilerError,
)

log = logging.getLogger(__name__)


def _with_sidecars(path: str) -> tuple[str, ...]:
    """A file and GDAL's sidecars of it (``.aux.xml``, ``.ovr``, ``.msk``, a GeoPackage's journals)."""
    return (path, path + ".aux.xml", path + ".ovr", path + ".msk", path + "-journal", path + "-wal", path + "-shm")


#: errno values that mean "the file could not grow".
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_SPACE_TEXT = ("no space left", "disk quota", "file too large", "disk full", "disk is full", "free disk space")


def write_failure(exc: BaseException, path: str, tmp: Optional[str], *,
                  messages: Sequence[str] = (), needed_bytes: Optional[int] = None,
                  usage: Optional[tuple[int, int, Optional[int]]] = None,
                  evidence_only: bool = False) -> Optional[TilerError]:
    """Turn a failed write into a one-line :class:`DiskFullError`, where that is what it was.

    GDAL reports a full disk through its own messages (``_tiffWriteProc: No
    space left on device``) and then a generic write error (often ``Read
    failed``, from flushing its block cache), SQLite as ``disk I/O error``, so
    the messages GDAL emitted, the exception's ``errno`` and text, the free
    space of the folder and the process's file-size limit (``ulimit -f``) are
    all looked at.

    Parameters
    ----------
    exc : BaseException
        The error raised while writing.
    path : str
        The destination (named in the message).
    tmp : str or None
        The temporary file being written (its size is what was written so far).
    messages : sequence of str
        GDAL messages captured during the write.
    needed_bytes : int, optional
        Uncompressed size of the whole output: an upper bound of what it needs.
    usage : tuple, optional
        ``(total bytes, largest file's bytes, free bytes)`` of the output's files as measured before they
        were removed (:meth:`Destination.usage`); default: measured now from ``tmp``.
    evidence_only : bool, default False
        Classify by this output's own evidence only (its folder nearly full, a file at the size limit), not
        by the error's text: which of several outputs filled its disk.

    Returns
    -------
    DiskFullError or None
        None when the failure was something else. The file-size limit (EFBIG
        under ``ulimit -f``, or a file system's largest file) and a full disk
        (ENOSPC, EDQUOT) each have their own message.
    """
    text = " ".join([str(exc), *messages]).lower()
    folder = os.path.dirname(path)
    if usage is None:
        sizes = [os.path.getsize(p) for p in (_with_sidecars(tmp) if tmp else ()) if os.path.isfile(p)]
        try:
            free: Optional[int] = shutil.disk_usage(folder).free
        except OSError:
            free = None
        usage = (sum(sizes), max(sizes, default=0), free)
    written, largest, free = usage
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    # SQLite (GeoPackage) reports a write past the limit as "disk I/O error" or a failed commit of its
    # transaction, and removes its journal, the file that hit it; EFBIG under a finite limit is the limit too.
    said = getattr(exc, "errno", None) == errno.EFBIG or "disk i/o error" in text or "commit transaction" in text
    if limit != resource.RLIM_INFINITY and (largest >= limit * 0.9 or said and not evidence_only):
        return DiskFullError(
            f"file size limit reached writing {path} (ulimit -f allows {limit / 1e6:.3g} MB per file); "
            "raise the limit (ulimit -f unlimited) or write a smaller output")
    nearly_full = free is not None and free < max(1 << 20, 0.01 * (needed_bytes or 0))
    if evidence_only and not nearly_full:
        return None
    if getattr(exc, "errno", None) == errno.EFBIG or "file too large" in text:
        return DiskFullError(
            f"file too large for the file system writing {path} ({largest / 1e6:.3g} MB reached); write it to "
            "a file system that holds larger files, or a smaller output")
    errno_full = getattr(exc, "errno", None) in _NO_SPACE
    text_full = any(t in text for t in _NO_SPACE_TEXT)
    if not (errno_full or text_full or nearly_full):
        return None
    want = max(needed_bytes or 0, written * 2, 1 << 20)
    return DiskFullError(
        f"no space left on device writing {path}; free {max(1, round(want / 1e6))} MB "
        "or choose another folder")


def disk_failure(exc: BaseException, destinations: Iterable[Optional[object]]) -> Optional[TilerError]:
    """The :class:`DiskFullError` behind any error raised while these destinations were being written.

    The one classification of every write path (rasters, parts, polygons,
    reports): whatever the error says (``Read failed`` from GDAL flushing an
    output's cached blocks during a read, SQLite's ``disk I/O error``, a
    truncated write), a destination whose folder is full or whose files reached
    the file-size limit makes it a full disk. It may be called after the
    temporaries were removed: each destination keeps the sizes and free space
    measured just before (:meth:`Destination.usage`).

    Parameters
    ----------
    exc : BaseException
        The error; interrupts and tiler's own output errors are never reclassified.
    destinations : iterable of Destination or None

    Returns
    -------
    DiskFullError or None
    """
    if isinstance(exc, (KeyboardInterrupt, SystemExit, DiskFullError, OutputExistsError, OutputVerificationError,
                        OutputPathError, OutputBusyError)) or not isinstance(exc, Exception):
        return None
    destinations = [d for d in destinations if d is not None]
    for evidence_only in (True, False):  # the output whose own folder or file is full first
        for d in destinations:
            failure = write_failure(exc, d.path, None, usage=d.usage(), evidence_only=evidence_only)
            if failure is not None:
                return failure
    return None




@contextmanager
def gdal_messages() -> Iterator[list[str]]:
    """Collect the messages GDAL emits (through rasterio's logger) inside the block.

    They are kept from the terminal (one clean line per error is the CLI's job)
    and logged at DEBUG (``-vv``).

    Yields
    ------
    list of str
        Filled with each message as it is emitted.
    """
    collected: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(record.getMessage())

    logger = logging.getLogger("rasterio._env")
    handler = _Collect(level=logging.WARNING)
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield collected
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        for m in collected:
            log.debug("GDAL: %s", m)


