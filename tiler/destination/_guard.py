"""The outputs of one command: checked and locked before any work, committed together (one transaction)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Optional, Sequence, Union

from tiler.destination._destination import _FORMATS, Destination, PathLike, _same_file, clean_stale
from tiler.destination._remote import RemoteDestination
from tiler.errors import (
    OutputExistsError,
    OutputPathError,
)
from tiler.storage import WRITE_SCHEMES, check_bucket, exists, is_url, name_of, redact, scheme_of, split_bucket

log = logging.getLogger(__name__)


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
        """Label -> absolute path (a remote output's URL) of every output asked for."""
        return {k: d.location for k, d in self._dest.items() if d is not None}

    def commit(self) -> list[str]:
        """Put every staged output in place, in one short step: uploads first (outputs bound for object storage),
        then renames.

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
            if not (d.overwrite or d._committed) and d.occupied():
                raise OutputExistsError(
                    f"output {d.location!r} was created by someone else while tiler ran; it was left as it is "
                    "and none of tiler's outputs was written. Pass --overwrite to replace it")
        # Uploads first (they can fail: the network, the store), each object appearing whole; one that fails
        # deletes the objects uploaded before it, and no local file has been renamed yet.
        remote = [d for d in staged if isinstance(d, RemoteDestination)]
        local = [d for d in staged if not isinstance(d, RemoteDestination)]
        with _signals_held():
            done: list[Destination] = []
            try:
                for d in remote:
                    d.publish()
                    done.append(d)
            except BaseException:
                for d in done:
                    try:
                        d.unpublish()
                    except Exception as exc:  # said, not raised: the upload's own failure is the error
                        log.warning("could not delete %s after a failed commit: %s", d.location, exc)
                raise
            self.committed.extend(d.location for d in remote)
            intents = _write_intents(local) if len(local) > 1 else []
            for d in local:
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
    work_dir: Optional[str] = None,
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
    work_dir : str, optional
        The local work folder of outputs bound for object storage (``s3://bucket/key``: a
        :class:`RemoteDestination`); default :func:`tiler.storage.default_work_dir`.

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
    StorageAccessError, StorageUnavailableError
        A remote output's store refused access (exit code 2) or did not answer (exit code 1).
    """
    inputs = [os.fspath(p) for p in inputs]
    remote_inputs = {_url_key(p) for p in inputs if is_url(p)}
    buckets: set[str] = set()  # checked once per bucket, not once per output
    existing_inputs = [p for p in inputs if not is_url(p) and os.path.exists(p)]
    checked: dict[str, Optional[Destination]] = {}
    seen: dict[str, str] = {}
    for label, spec in outputs.items():
        if spec is None:
            checked[label] = None
            continue
        path, suffixes = spec if isinstance(spec, tuple) else (spec, ())
        if is_url(os.fspath(path)):
            checked[label] = _remote(label, os.fspath(path), suffixes, remote_inputs, seen, overwrite, work_dir,
                                     buckets)
            seen[label] = os.fspath(path)
            continue
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




def _url_key(url: str) -> str:
    """A URL as compared with others (its scheme and host in lower case, no trailing slash)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}".rstrip("/")


def _remote(label: str, url: str, suffixes: Sequence[str], remote_inputs: set, seen: Mapping[str, str],
            overwrite: bool, work_dir: Optional[str], buckets: set) -> RemoteDestination:
    """The checks of :func:`guard_outputs` for an output bound for object storage; its destination."""
    shown = redact(url)
    if scheme_of(url) not in WRITE_SCHEMES:
        raise OutputPathError(
            f"{label} {shown}: tiler writes outputs to s3:// (AWS S3 or any S3-compatible store: MinIO, Ceph, R2 "
            "...) and to local paths; write it locally and copy it with the store's own tool")
    name = name_of(url)
    if not name or url.endswith("/"):
        raise OutputPathError(f"{label} {shown} names a prefix; give an object name such as "
                              f"{shown.rstrip('/')}/out{suffixes[0] if suffixes else ''}")
    if _url_key(url) in remote_inputs:
        raise OutputPathError(f"{label} {shown} is an input of this command; tiler never replaces its input, even "
                              "with --overwrite: choose another key")
    for other_label, other in seen.items():
        if _url_key(other) == _url_key(url):
            raise OutputPathError(f"{label} and {other_label} are the same object {shown}; give each its own name")
    if suffixes and not name.lower().endswith(tuple(x.lower() for x in suffixes)):
        stem = os.path.splitext(name)[0] or "out"
        raise OutputPathError(f"{label} {shown}: tiler writes this output as {_FORMATS.get(suffixes[0], suffixes[0])}; "
                              f"name it with {' or '.join(suffixes)} (e.g. {stem}{suffixes[0]})")
    if split_bucket(url)[0] not in buckets:
        check_bucket(url, label)
        buckets.add(split_bucket(url)[0])
    if not overwrite and exists(url, label):
        raise OutputExistsError(f"{label} {shown} exists; pass --overwrite to replace it")
    return RemoteDestination(url, overwrite=overwrite, work_dir=work_dir, deferred=True)
