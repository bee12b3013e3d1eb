"""One output file written atomically under an advisory lock; the temporary names and their cleaning."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Union

from tiler import _signals
from tiler.destination._failure import _with_sidecars, write_failure
from tiler.errors import (
    OutputBusyError,
    OutputExistsError,
    OutputPathError,
    TilerError,
)

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
    after_publish : list of callable
        Called once :meth:`publish` has put the file in place (the removal of a run's parts and journal,
        kept until then so that a commit that fails, an upload say, leaves the run resumable).
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
        self.after_publish: list[Callable[[], None]] = []

    @property
    def folder(self) -> str:
        """The destination folder (for a remote output, its folder in the local work folder)."""
        return os.path.dirname(self.path)

    @property
    def location(self) -> str:
        """Where the output is, as messages and reports show it: the path (a remote output's URL)."""
        return self.path

    def occupied(self) -> bool:
        """Whether something exists at the destination now."""
        return os.path.lexists(self.path)

    def unpublish(self) -> None:
        """Undo :meth:`publish` where a commit failed after it; a no-op for a local file, whose renames are the
        last step of a commit and are finished by the next command after a crash (the intent file)."""

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
        self.tmp = self._temporary_name()
        return self.tmp

    def _temporary_name(self, label: str = "", ext: Optional[str] = None) -> str:
        """``.NAME.tiler-PID-TOKEN.part[LABEL]EXT`` beside the destination: this process's, so ours to clean."""
        folder, name = os.path.split(self.path)
        ext = os.path.splitext(name)[1] if ext is None else ext
        return os.path.join(folder, f".{name}.tiler-{os.getpid()}-{secrets.token_hex(4)}.part{label}{ext}")

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
        path = self._temporary_name(f".{label}", ext)
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
        mine = self._temporary_name()
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
        self._published()

    def _published(self) -> None:
        """Settle a publish that put the file in place: nothing staged any more, the output recorded as written
        (not an intermediate), and the :attr:`after_publish` callbacks run (and forgotten)."""
        self.staged = None
        self._committed = True
        if not self.intermediate:
            _signals.written(self.location)
        calls, self.after_publish = self.after_publish, []
        for call in calls:
            call()

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


