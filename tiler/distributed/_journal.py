"""Fingerprints of a run and the journal of its finished parts (DESIGN.md invariant 8).

A run's fingerprint is everything its output depends on: the scene's files
(path, size, modification time; for a URL its size and ETag, never
credentials), the model file's sha256, the options (the frozen config
values) and the tiler version. The journal is a JSON-lines file
in the run's work folder: a header with the fingerprint and the parts' rows,
then one line per finished part, appended and fsynced as each part is done.
A rerun with the same fingerprint recomputes only the parts the journal lacks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from typing import Any, Iterable, Mapping, Optional, Sequence

from tiler._version import __version__
from tiler.scene import scene_inputs
from tiler.storage import identity, is_url

__all__ = ["Journal", "fingerprint", "digest", "file_sha256", "work_folder", "FINGERPRINT_TAG"]

log = logging.getLogger(__name__)

#: Dataset tag of a distributed or batch output holding its fingerprint's digest:
#: a batch rerun skips a scene whose output carries the digest it would write.
FINGERPRINT_TAG = "TILER_FINGERPRINT"

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """The sha256 of a file, hex; cached per (path, size, modification time) in this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def _stat(paths: Iterable[str]) -> list[dict]:
    out = []
    for p in sorted({p if is_url(p) else os.path.abspath(p) for p in paths}):
        if is_url(p):  # size and ETag (an object replaced under its key is another input); no credentials
            out.append(identity(p))
            continue
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append({"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


#: The layout of a part's files (:func:`tiler.distributed._tasks.part_files`), in the fingerprint: a journal of
#: parts kept another way (2: polygons as features and seam pieces, no probability files) is recomputed.
PART_FILES_VERSION = 2


def fingerprint(scene: str, model_path: str, options: Mapping[str, Any]) -> dict:
    """What a run's output depends on, JSON-ready.

    Parameters
    ----------
    scene : str
        The scene (every file it stands for: :func:`tiler.destination.scene_inputs`).
    model_path : str
        The model file (hashed: a retrained model at the same path counts as another).
    options : mapping
        The run's config values (``InferenceConfig.to_dict()`` ...).

    Returns
    -------
    dict
        ``{"scene": [{path, size, mtime_ns}, ...], "model_sha256", "options", "version", "part_files"}``.
    """
    return {"scene": _stat(scene_inputs(scene)), "model_sha256": file_sha256(model_path),
            "options": json.loads(json.dumps(options, sort_keys=True, default=str)), "version": __version__,
            "part_files": PART_FILES_VERSION}


def digest(fp: Mapping[str, Any]) -> str:
    """A short stable hash of a fingerprint (sha256 of its canonical JSON, 16 hex digits)."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def work_folder(destination: str) -> str:
    """The hidden work folder of a destination: ``.NAME.tiler-parts`` beside it."""
    folder, name = os.path.split(os.path.abspath(destination))
    return os.path.join(folder, f".{name}.tiler-parts")


class Journal:
    """The journal of a run's parts, in its work folder.

    Parameters
    ----------
    folder : str
        The work folder (created if missing).

    Attributes
    ----------
    path : str
        ``folder/journal.jsonl``.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, "journal.jsonl")

    def read(self) -> list[dict]:
        """Every complete line (a line torn by a crash mid-write is ignored)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def start(self, fp: Mapping[str, Any], parts: Sequence[tuple[int, int]]) -> dict[int, dict]:
        """Open the journal for a run; return the parts already finished with this fingerprint.

        A journal of another fingerprint or part layout (a touched input,
        another model or option) is discarded with the work folder's files.

        Parameters
        ----------
        fp : mapping
            The run's :func:`fingerprint`.
        parts : sequence of (int, int)
            Output rows of each part.

        Returns
        -------
        dict of int to dict
            Part index -> its journal entry, for finished parts whose files
            are present with the size recorded.
        """
        key = digest(fp)
        parts = [list(map(int, p)) for p in parts]
        entries = self.read()
        header = entries[0] if entries and entries[0].get("kind") == "run" else None
        if header is not None and header.get("fingerprint") == key and header.get("parts") == parts:
            with open(self.path, "rb+") as fh:  # a line torn by a crash: end it, so appends stay whole
                fh.seek(0, os.SEEK_END)
                if fh.tell() and (fh.seek(-1, os.SEEK_END) or fh.read(1) != b"\n"):
                    fh.write(b"\n")
            done = {}
            for e in entries[1:]:
                if e.get("kind") == "part" and self._present(e):
                    done[int(e["part"])] = e
            return done
        if os.path.isdir(self.folder) and (header is not None or os.listdir(self.folder)):
            why = "another fingerprint (inputs, model, options or version changed)" if header else "no journal"
            log.info("work folder %s: %s; its parts are recomputed", self.folder, why)
            shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(self.folder, exist_ok=True)
        self._append({"kind": "run", "fingerprint": key, "parts": parts, "detail": dict(fp)}, mode="w")
        return {}

    def _present(self, entry: Mapping[str, Any]) -> bool:
        for name, size in entry.get("sizes", {}).items():
            try:
                if os.path.getsize(os.path.join(self.folder, name)) != size:
                    return False
            except OSError:
                return False
        return bool(entry.get("sizes"))

    def append(self, entry: Mapping[str, Any]) -> None:
        """Append a finished part's entry and fsync it (the part's files are already in place)."""
        self._append({"kind": "part", **entry})

    def _append(self, entry: Mapping[str, Any], mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        """Remove the work folder (after the output is committed)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def header(self) -> Optional[dict]:
        """The run line, or None."""
        entries = self.read()
        return entries[0] if entries and entries[0].get("kind") == "run" else None
