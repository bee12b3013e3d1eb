"""Guarded, atomic destinations: the one path every file tiler writes goes through.

DESIGN.md invariants 6 and 9. Every output of a command (mask, probabilities,
indices, report, scores, model file, registration report) is

1. **checked before any work starts** (:func:`guard_outputs`): it is not an
   input of the command (``os.path.samefile``: symlinks, hard links, sensor-folder
   members and manifests included) even with ``overwrite``; it does not exist
   unless ``overwrite``; no two outputs are one file; its folder exists and is
   writable; its name ends in a suffix of the format written;
2. **locked** for the whole command: an advisory ``flock`` on a lock file beside
   the destination, so a second command writing the same file at the same time is
   refused at once instead of racing for the last rename;
3. **written to a temporary name** in the destination folder that carries the
   owner's process id, ``.NAME.tiler-PID-TOKEN.part.EXT``, and
4. **staged** (verified by the writer, flushed to disk, kept under its
   temporary name) and
5. **committed together** with every other output of the command
   (:meth:`OutputGuard.commit`, when the guard's ``with`` block ends without
   an error): all staged files are renamed into place in one short step with
   SIGINT and SIGTERM held back. Without ``overwrite`` a rename never replaces
   a file that appeared at the destination while the command ran (``link`` +
   ``unlink``, which fails if the name exists).

The outputs of one command are one transaction (DESIGN.md invariant 6): a
failure or a signal before the commit step removes every temporary file and
leaves every earlier file at the output paths as it was. Before its renames the
commit step writes an intent file, ``.tiler-commit-PID.json``, into every folder
it renames into; a crash inside the step (SIGKILL, a power cut) leaves some
outputs renamed and the others verified under their temporary names, and the
next command that writes into one of those folders finishes the renames
(every staged file was complete and verified) before anything else, so a
rerun finds the complete set of outputs and no mixture of two runs.

A process killed with SIGKILL cannot clean up; the next command that writes
into the same folder removes the temporary and lock files of processes that no
longer exist (never those of a live process) and logs it at ``-v``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from tiler import _signals
from tiler.errors import (
    DiskFullError,
    OutputBusyError,
    OutputExistsError,
    OutputPathError,
    OutputVerificationError,
    TilerError,
)

__all__ = [
    "Destination",
    "OutputGuard",
    "guard_outputs",
    "clean_stale",
    "is_temporary_name",
    "write_failure",
    "disk_failure",
    "GEOTIFF_SUFFIXES",
    "JSON_SUFFIXES",
]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Names a GeoTIFF output may end in: tiler writes GeoTIFF only, and never
#: puts a TIFF behind another format's name (``mask.png``).
GEOTIFF_SUFFIXES = (".tif", ".tiff")
#: Names a JSON report may end in.
JSON_SUFFIXES = (".json",)
#: Format names for messages, by first suffix.
_FORMATS = {".tif": "GeoTIFF", ".json": "JSON", ".keras": "a Keras model file", ".onnx": "an ONNX model",
            ".html": "an HTML page"}

#: ``.NAME.tiler-PID-TOKEN.part`` followed by the extension (and GDAL sidecars
#: such as ``.aux.xml``): the temporary files of a tiler process.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tiler-(?P<pid>\d+)-[0-9a-f]{8}\.part(?:\..*)?$")
#: ``.NAME.tiler.lock``: the advisory lock of a destination.
_LOCK_RE = re.compile(r"^\.(?P<name>.+)\.tiler\.lock$")
#: ``.tiler-commit-PID.json``: the intent file of a commit step (see the module's docstring).
_INTENT_RE = re.compile(r"^\.tiler-commit-(?P<pid>\d+)\.json$")


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one of tiler's temporary or lock files."""
    return bool(_TEMP_RE.match(name) or _LOCK_RE.match(name) or _INTENT_RE.match(name))


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this host); errs on the side of alive."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale(folder: PathLike) -> list[str]:
    """Remove tiler's temporary files and locks left in ``folder`` by dead processes.

    A temporary file is stale when the process id in its name no longer exists;
    a lock file when no process holds its lock. Files of live processes are
    never touched.

    Parameters
    ----------
    folder : path-like
        A destination folder.

    Returns
    -------
    list of str
        The paths removed (logged at INFO, shown with ``-v``).
    """
    folder = os.fspath(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:  # first finish the commit step of a process that died inside it
        m = _INTENT_RE.match(name)
        if m and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            _roll_forward(os.path.join(folder, name))
    names = os.listdir(folder)
    for name in names:
        path = os.path.join(folder, name)
        m = _TEMP_RE.match(name)
        if m and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
            try:
                os.unlink(path)
            except OSError:
                continue
            removed.append(path)
            log.info("removed %s, left by process %s which no longer runs", path, m["pid"])
        elif _LOCK_RE.match(name):
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # held: a live process is writing that destination
            try:
                os.unlink(path)
                removed.append(path)
                log.info("removed stale lock %s (no process holds it)", path)
            except OSError:
                pass
            finally:
                os.close(fd)
    return removed


def _roll_forward(intent: str) -> None:
    """Finish the renames listed in the intent file of a commit step that a dead process began."""
    try:
        with open(intent, encoding="utf-8") as f:
            renames = json.load(f)["renames"]
    except (OSError, ValueError, KeyError):
        renames = []
    for tmp, final in renames:
        if os.path.exists(tmp):
            try:
                os.replace(tmp, final)
            except OSError as exc:
                log.warning("could not finish the interrupted commit of %s (%s)", final, exc.strerror)
                continue
            log.warning("finished the commit of %s, interrupted when process %s died inside its rename step",
                        final, os.path.basename(intent)[len(".tiler-commit-"):-len(".json")])
    try:
        os.unlink(intent)
    except OSError:
        pass


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


class Destination:
    """One output file written atomically under an advisory lock.

    Create through :func:`guard_outputs`, which checks and locks every output
    of a command before any work starts.

    Parameters
    ----------
    path : path-like
        Final path.
    overwrite : bool
        Whether an existing file may be replaced.
    deferred : bool, default False
        Part of a transaction (:func:`guard_outputs` makes its destinations
        deferred): :meth:`commit` only stages the file (verified, flushed, kept
        under its temporary name, :attr:`staged`); :meth:`publish`, called by
        :meth:`OutputGuard.commit` for all the command's outputs together,
        renames it into place.
    intermediate : bool, default False
        A work file (a part of a distributed run, a training checkpoint), not
        an output: an interrupted command's last line does not list it.

    Attributes
    ----------
    path : str
        Absolute final path.
    tmp : str or None
        The temporary path while a write is open.
    staged : str or None
        The complete, verified file waiting for :meth:`publish` (deferred only).
    """

    def __init__(self, path: PathLike, *, overwrite: bool, deferred: bool = False,
                 intermediate: bool = False) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = overwrite
        self.deferred = deferred
        self.intermediate = intermediate
        self.staged: Optional[str] = None
        self.tmp: Optional[str] = None
        self._scratch: list[str] = []
        self._committed = False  # a later commit may replace our own earlier one
        self._lock_fd: Optional[int] = None
        self._lock_path: Optional[str] = None
        self._at_discard: Optional[tuple[int, int, Optional[int]]] = None

    @property
    def folder(self) -> str:
        """The destination folder."""
        return os.path.dirname(self.path)

    # --- lock ----------------------------------------------------------------------

    def lock(self) -> None:
        """Take the destination's advisory lock (non-blocking).

        Raises
        ------
        OutputBusyError
            If another process holds it (writes the same file now).
        OutputPathError
            If the lock file cannot be created.
        """
        if self._lock_fd is not None:
            return
        folder, name = os.path.split(self.path)
        lock_path = os.path.join(folder, f".{name}.tiler.lock")
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputPathError(f"cannot create a lock file in {folder!r} ({exc.strerror}); "
                                      "choose a writable folder") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                finally:
                    os.close(fd)
                raise OutputBusyError(
                    f"output {self.path!r} is being written by another tiler process (pid {holder}); "
                    "wait for it to finish or choose another output") from None
            # The holder may have removed the file between our open and flock:
            # then we locked a deleted inode; start again on the current one.
            try:
                same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._lock_fd, self._lock_path = fd, lock_path

    def release(self) -> None:
        """Remove the temporary file (if any) and release the lock."""
        self.discard()
        if self._lock_fd is not None:
            try:
                os.unlink(self._lock_path)
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = self._lock_path = None

    # --- temporary file ------------------------------------------------------------

    def temporary(self) -> str:
        """A fresh temporary path beside the destination, with the same extension.

        The file is not created; the caller writes it and then calls
        :meth:`commit` or :meth:`discard`. A previous temporary file is
        removed; :meth:`scratch` files are kept.
        """
        if self.tmp is not None:
            _remove_with_sidecars(self.tmp)
            self.tmp = None
        folder, name = os.path.split(self.path)
        ext = os.path.splitext(name)[1]
        self.tmp = os.path.join(folder, f".{name}.tiler-{os.getpid()}-{secrets.token_hex(4)}.part{ext}")
        return self.tmp

    def scratch(self, label: str, ext: Optional[str] = None) -> str:
        """A further temporary path beside the destination, for an intermediate file.

        Named like :meth:`temporary` (so a dead process's leftovers are
        cleaned) with ``label`` before the extension, e.g.
        ``.m.tif.tiler-PID-TOKEN.part.plain.tif``; removed by :meth:`discard`
        and :meth:`commit` unless adopted (:meth:`adopt`).

        Parameters
        ----------
        label : str
            A short word naming the intermediate (``plain``, ``features``).
        ext : str, optional
            Extension with its dot; default the destination's.
        """
        folder, name = os.path.split(self.path)
        ext = os.path.splitext(name)[1] if ext is None else ext
        path = os.path.join(folder, f".{name}.tiler-{os.getpid()}-{secrets.token_hex(4)}.part.{label}{ext}")
        self._scratch.append(path)
        return path

    def adopt(self, path: str) -> None:
        """Make ``path`` (a :meth:`scratch` file, complete) the file :meth:`commit` renames into place.

        The previous temporary file, if any, is removed.
        """
        old = self.tmp
        if path in self._scratch:
            self._scratch.remove(path)
        self.tmp = path
        if old is not None and old != path:
            _remove_with_sidecars(old)

    def _fail(self, exc: BaseException, tmp: str) -> None:
        """Remove the temporary file; raise a :class:`DiskFullError` where ``exc`` was a full disk."""
        failure = (write_failure(exc, self.path, tmp)
                   if isinstance(exc, OSError) and not isinstance(exc, TilerError) else None)
        self.discard()
        if failure is not None:
            raise failure from None

    @classmethod
    def coerce(cls, path: Union[PathLike, "Destination"], *, overwrite: bool) -> "Destination":
        """``path`` itself if it is a Destination (already guarded), else a new one for it."""
        return path if isinstance(path, Destination) else cls(path, overwrite=overwrite)

    def files(self) -> list[str]:
        """The files this destination has on disk now: temporary, staged and scratch files and their sidecars."""
        found = []
        for path in [self.tmp, self.staged, *self._scratch]:
            if path is not None:
                found.extend(p for p in _with_sidecars(path) if os.path.isfile(p))
        return found

    def usage(self) -> tuple[int, int, Optional[int]]:
        """``(total bytes, largest file's bytes, free bytes of the folder)`` of :meth:`files`, measured now, or
        as they were just before :meth:`discard` removed them (so that a failure can still be classified as
        a full disk after the sink that failed cleaned up)."""
        files = self.files()
        if not files and self._at_discard is not None:
            return self._at_discard
        sizes = [os.path.getsize(p) for p in files]
        try:
            free: Optional[int] = shutil.disk_usage(self.folder).free
        except OSError:
            free = None
        return sum(sizes), max(sizes, default=0), free

    def discard(self) -> None:
        """Remove the temporary file, a staged file, the scratch files and their GDAL sidecars, if any."""
        if self.files():
            self._at_discard = self.usage()
        for path in self._scratch:
            _remove_with_sidecars(path)
        self._scratch = []
        if self.staged is not None:
            _remove_with_sidecars(self.staged)
            self.staged = None
        if self.tmp is None:
            return
        _remove_with_sidecars(self.tmp)
        self.tmp = None

    @property
    def current(self) -> str:
        """Where the written file can be read now: the staged file until :meth:`publish`, else :attr:`path`."""
        return self.staged or self.path

    def take(self, path: str) -> None:
        """Take over a complete file another process wrote and staged (a dask worker's, named with its pid).

        It is renamed to a temporary name of this process (so that it is ours to clean up) and becomes the
        file :meth:`commit` stages or renames into place.

        Parameters
        ----------
        path : str
            The other process's staged file, in this destination's folder.
        """
        folder, name = os.path.split(self.path)
        ext = os.path.splitext(name)[1]
        mine = os.path.join(folder, f".{name}.tiler-{os.getpid()}-{secrets.token_hex(4)}.part{ext}")
        os.replace(path, mine)
        self.adopt(mine)

    def commit(self) -> None:
        """Flush the temporary file to disk and rename it into place, or stage it where ``deferred``.

        Without ``overwrite``, a file that appeared at the destination while the
        command ran is never replaced.

        Raises
        ------
        OutputExistsError
            If ``overwrite`` is false and the destination now exists.
        DiskFullError
            If the disk filled while flushing.
        """
        if self.tmp is None:
            raise RuntimeError("nothing to commit: call temporary() and write the file first")
        tmp = self.tmp
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except BaseException as exc:
            self._fail(exc, tmp)
            raise
        self.tmp = None
        for path in self._scratch:
            _remove_with_sidecars(path)
        self._scratch = []
        if self.staged is not None:  # a second commit of the same output replaces the first
            _remove_with_sidecars(self.staged)
        self.staged = tmp
        if not self.deferred:
            self.publish()

    def publish(self) -> None:
        """Rename the staged file into place (a no-op when nothing is staged).

        Raises
        ------
        OutputExistsError
            If ``overwrite`` is false and the destination now exists (the staged file is removed).
        """
        if self.staged is None:
            return
        tmp = self.staged
        try:
            if self.overwrite or self._committed:
                os.replace(tmp, self.path)
            else:
                try:
                    os.link(tmp, self.path)  # fails if the name exists: no silent replacement
                except FileExistsError:
                    raise OutputExistsError(
                        f"output {self.path!r} was created by someone else while tiler ran; it was left as "
                        "it is and tiler's result discarded. Pass --overwrite to replace it") from None
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
                        raise
                    # A filesystem without hard links: check, then rename.
                    if os.path.exists(self.path):
                        raise OutputExistsError(
                            f"output {self.path!r} was created while tiler ran; pass --overwrite to "
                            "replace it") from None
                    os.replace(tmp, self.path)
                else:
                    os.unlink(tmp)
            _fsync_dir(self.folder)
        except BaseException:
            self.discard()
            raise
        self.staged = None
        self._committed = True
        if not self.intermediate:
            _signals.written(self.path)

    @contextmanager
    def writing(self) -> Iterator[str]:
        """Write the destination through a temporary file: yields its path, commits on success.

        On an error inside the block the temporary file is removed (a full disk
        becomes a :class:`DiskFullError`) and nothing reaches the destination.

        Yields
        ------
        str
            The temporary path to write (same folder and extension).
        """
        tmp = self.temporary()
        try:
            yield tmp
        except BaseException as exc:
            self._fail(exc, tmp)
            raise
        self.commit()

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` to the destination atomically (see :meth:`writing`)."""
        with self.writing() as tmp, open(tmp, "wb") as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        """Write ``text`` (UTF-8) to the destination atomically."""
        self.write_bytes(text.encode("utf-8"))

    def __repr__(self) -> str:
        return f"Destination({self.path!r}, overwrite={self.overwrite})"


def _with_sidecars(path: str) -> tuple[str, ...]:
    """A file and GDAL's sidecars of it (``.aux.xml``, ``.ovr``, ``.msk``, a GeoPackage's journals)."""
    return (path, path + ".aux.xml", path + ".ovr", path + ".msk", path + "-journal", path + "-wal", path + "-shm")


def _remove_with_sidecars(path: str) -> None:
    """Remove a file and GDAL's sidecars of it."""
    for p in _with_sidecars(path):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(p, ignore_errors=True)


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def disk_failure(exc: BaseException, destinations: Iterable[Optional["Destination"]]) -> Optional[TilerError]:
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


class OutputGuard:
    """The checked, locked outputs of one command: one transaction (see :func:`guard_outputs`).

    A context manager. Every :class:`Destination` it holds is ``deferred``: its
    writer stages it. Leaving the ``with`` block without an error commits every
    staged output together (:meth:`commit`); leaving it with an error (or a
    signal) removes every temporary and staged file, so that the earlier files
    at the output paths stay as they were. Either way every lock is released.
    ``guard[label]`` is the :class:`Destination` of an output, or None where that
    output was not asked for.
    """

    def __init__(self, destinations: Mapping[str, Optional[Destination]]) -> None:
        self._dest = dict(destinations)
        self.committed: list[str] = []

    def __getitem__(self, label: str) -> Optional[Destination]:
        return self._dest[label]

    def paths(self) -> dict[str, str]:
        """Label -> absolute path of every output asked for."""
        return {k: d.path for k, d in self._dest.items() if d is not None}

    def commit(self) -> list[str]:
        """Rename every staged output into place, in one short step.

        The renames are done in the order the outputs were given to
        :func:`guard_outputs`, with SIGINT and SIGTERM held back until the
        last one (a signal that arrives meanwhile is acted on right after).
        Before them, an intent file listing them is written into every folder
        concerned; a crash inside the step is finished by the next command
        that writes there (see the module's docstring).

        Returns
        -------
        list of str
            The paths committed (also kept in :attr:`committed`).

        Raises
        ------
        OutputExistsError
            Without ``overwrite``, where an output appeared while the command
            ran; checked for every output before the first rename, so that
            none is renamed.
        """
        staged = [d for d in self._dest.values() if d is not None and d.staged is not None]
        if not staged:
            return []
        for d in staged:
            if not (d.overwrite or d._committed) and os.path.lexists(d.path):
                raise OutputExistsError(
                    f"output {d.path!r} was created by someone else while tiler ran; it was left as it is and "
                    "none of tiler's outputs was written. Pass --overwrite to replace it")
        with _signals_held():
            intents = _write_intents(staged) if len(staged) > 1 else []
            for d in staged:
                d.publish()
                self.committed.append(d.path)
            for path in intents:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return list(self.committed)

    def release(self) -> None:
        """Discard uncommitted temporaries and staged files and release the locks."""
        for d in self._dest.values():
            if d is not None:
                d.release()

    def __enter__(self) -> "OutputGuard":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.release()


def _write_intents(staged: Sequence[Destination]) -> list[str]:
    """Write the intent file of a commit step into every folder it renames into; return their paths."""
    doc = json.dumps({"pid": os.getpid(), "renames": [[d.staged, d.path] for d in staged]})
    written = []
    for folder in dict.fromkeys(d.folder for d in staged):
        path = os.path.join(folder, f".tiler-commit-{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)
            f.flush()
            os.fsync(f.fileno())
        written.append(path)
    return written


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block (main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def guard_outputs(
    outputs: Mapping[str, Union[None, PathLike, tuple[PathLike, Sequence[str]]]],
    *,
    inputs: Iterable[PathLike] = (),
    overwrite: bool = False,
) -> OutputGuard:
    """Check and lock every output of a command before any work starts.

    Parameters
    ----------
    outputs : mapping
        Option name (used in messages, e.g. ``"--out"``) -> path, or
        ``(path, suffixes)`` where the file's format demands a name ending
        (``(".tif", ".tiff")``), or None for an output not asked for.
    inputs : iterable of path-like
        Every file the command reads (see :func:`tiler.scene.scene_inputs`; the model file,
        a class file ...). Missing ones are ignored.
    overwrite : bool
        Whether existing outputs may be replaced.

    Returns
    -------
    OutputGuard
        Holds a lock on each destination; use as a context manager: the
        outputs are committed together when its block ends without an error,
        and none is when it ends with one.

    Raises
    ------
    OutputPathError
        An output is a folder, its folder is missing or not writable, its name
        has the wrong suffix, it is the same file as an input, or two outputs
        are the same file (CLI exit code 2; also with ``overwrite``).
    OutputExistsError
        An output exists and ``overwrite`` is false (exit code 2).
    OutputBusyError
        Another process is writing one of the outputs (exit code 2).
    """
    inputs = [os.fspath(p) for p in inputs]
    existing_inputs = [p for p in inputs if os.path.exists(p)]
    checked: dict[str, Optional[Destination]] = {}
    seen: dict[str, str] = {}
    for label, spec in outputs.items():
        if spec is None:
            checked[label] = None
            continue
        path, suffixes = spec if isinstance(spec, tuple) else (spec, ())
        dest = Destination(path, overwrite=overwrite, deferred=True)
        p = dest.path
        if os.path.isdir(p):
            raise OutputPathError(f"{label} {p!r} is a folder; give a file name such as "
                                  f"out{suffixes[0] if suffixes else ''}")
        if not os.path.isdir(dest.folder):
            raise OutputPathError(f"{label}: folder {dest.folder!r} does not exist; create it first")
        if not os.access(dest.folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"{label}: folder {dest.folder!r} is not writable; choose another folder")
        for q in existing_inputs:
            if os.path.exists(p) and _same_file(p, q) or os.path.realpath(p) == os.path.realpath(q):
                raise OutputPathError(
                    f"{label} {p!r} is the input {q!r}; tiler never replaces its input, even with "
                    "--overwrite: choose another output name")
        for other_label, other in seen.items():
            if os.path.realpath(p) == os.path.realpath(other) or (os.path.exists(p) and _same_file(p, other)):
                raise OutputPathError(f"{label} and {other_label} are the same file {p!r}; give each its own name")
        if suffixes and not p.lower().endswith(tuple(s.lower() for s in suffixes)):
            stem = os.path.splitext(os.path.basename(p))[0] or "out"
            raise OutputPathError(
                f"{label} {p!r}: tiler writes this output as {_FORMATS.get(suffixes[0], suffixes[0])}; name it with "
                f"{' or '.join(suffixes)} (e.g. {stem}{suffixes[0]})")
        if os.path.exists(p) and not overwrite:
            raise OutputExistsError(f"{label} {p!r} exists; pass --overwrite to replace it")
        seen[label] = p
        checked[label] = dest
    guard = OutputGuard(checked)
    try:
        for folder in sorted({d.folder for d in checked.values() if d is not None}):
            clean_stale(folder)
        for d in checked.values():
            if d is not None:
                d.lock()
    except BaseException:
        guard.release()
        raise
    return guard


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

