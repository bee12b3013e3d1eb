"""An output bound for object storage: written and verified in the local work folder, uploaded whole at the commit."""

from __future__ import annotations

import os
from typing import Optional

from tiler.destination._destination import Destination, _remove_with_sidecars
from tiler.storage import default_work_dir, delete, exists, redact, upload, work_path


class RemoteDestination(Destination):
    """An output at an ``s3://`` URL, written through a local file in the work folder.

    Everything a :class:`Destination` does happens on :attr:`path`, a file in the work folder that stands
    for the URL (:func:`tiler.storage.work_path`: stable across runs, so that the journal and the parts of
    an interrupted run are found again): the temporary name, the lock, the writer's verification, the
    staging. :meth:`publish` uploads the staged file (one ``PUT``, or a multipart upload that becomes the
    object only when completed), checks the object's size and ETag against the file, and removes the local
    file.

    Parameters
    ----------
    url : str
        ``s3://bucket/key``.
    overwrite : bool
        Whether an existing object may be replaced.
    work_dir : str, optional
        The local work folder; default :func:`tiler.storage.default_work_dir`. Created if missing.
    deferred, intermediate : bool
        As for :class:`Destination`.
    local : str, optional
        The local file (default :func:`tiler.storage.work_path` of the URL in ``work_dir``).

    Attributes
    ----------
    url : str
        The object's URL.
    upload : dict or None
        ``{"url", "bytes", "etag", "seconds"}`` of the upload once published.
    """

    def __init__(self, url: str, *, overwrite: bool, work_dir: Optional[str] = None, deferred: bool = False,
                 intermediate: bool = False, local: Optional[str] = None) -> None:
        local = local or work_path(url, work_dir or default_work_dir())
        os.makedirs(os.path.dirname(local), exist_ok=True)
        super().__init__(local, overwrite=overwrite, deferred=deferred, intermediate=intermediate)
        self.url = url
        self.upload: Optional[dict] = None

    @property
    def location(self) -> str:
        """The URL, as messages and reports show it (no credentials)."""
        return redact(self.url)

    def occupied(self) -> bool:
        """Whether an object exists at the URL now."""
        return exists(self.url)

    def publish(self) -> None:
        """Upload the staged file whole and check the object; a no-op when nothing is staged.

        Raises
        ------
        OutputExistsError
            ``overwrite`` is false and an object appeared at the URL while the command ran.
        OutputVerificationError
            The object differs from the file (it is deleted).
        StorageAccessError, StorageUnavailableError
            Access refused, or the store did not answer after the retries.
        """
        if self.staged is None:
            return
        try:
            self.upload = upload(self.staged, self.url, overwrite=self.overwrite or self._committed)
        except BaseException:
            self.discard()
            raise
        _remove_with_sidecars(self.staged)
        self._published()

    def release(self) -> None:
        """Remove the temporary files, release the lock, and remove the URL's sub-folder of the work folder
        where nothing is left in it (the parts of an interrupted run are kept for the rerun)."""
        super().release()
        try:
            os.rmdir(self.folder)
        except OSError:
            pass

    def unpublish(self) -> None:
        """Delete the object this destination uploaded (the rollback of a commit that failed after it)."""
        if self.upload is not None:
            delete(self.url)
            self.upload = None

    def __repr__(self) -> str:
        return f"RemoteDestination({self.location!r}, overwrite={self.overwrite})"
