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

An output bound for object storage (``s3://bucket/key``) is a
:class:`RemoteDestination`: steps 2 to 4 happen on a file in the local work
folder that stands for the URL, and step 5 uploads it whole (the object appears
only when complete) and checks the object's size and ETag; the uploads of a
commit come before its renames, and one that fails deletes the objects uploaded
before it.

A process killed with SIGKILL cannot clean up; the next command that writes
into the same folder removes the temporary and lock files of processes that no
longer exist (never those of a live process) and logs it at ``-v``.
"""

from tiler.destination._destination import (
    GEOTIFF_SUFFIXES,
    JSON_SUFFIXES,
    Destination,
    clean_stale,
    is_temporary_name,
)
from tiler.destination._failure import disk_failure, gdal_messages, write_failure
from tiler.destination._guard import OutputGuard, guard_outputs
from tiler.destination._remote import RemoteDestination

__all__ = [
    "Destination",
    "RemoteDestination",
    "OutputGuard",
    "guard_outputs",
    "clean_stale",
    "is_temporary_name",
    "write_failure",
    "disk_failure",
    "gdal_messages",
    "GEOTIFF_SUFFIXES",
    "JSON_SUFFIXES",
]
