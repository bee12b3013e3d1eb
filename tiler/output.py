"""Atomic, tiled, compressed GeoTIFF output.

The mask is written to a temporary file in the destination folder and renamed
into place only when complete and verified (DESIGN.md, invariant 6). Rows are
buffered into whole blocks of tiles, so every compressed tile is written exactly
once, in order, whatever the strip height.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from tiler.errors import OutputExistsError, OutputPathError, OutputVerificationError, UsageError

__all__ = ["BLOCK_SIZE", "CLASS_NODATA", "check_destination", "parse_creation_options", "MaskWriter"]

#: Tile side of the output GeoTIFF (DESIGN.md, "Output").
BLOCK_SIZE = 512
#: Nodata value of the uint8 class map (class indices use 0..254).
CLASS_NODATA = 255


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def check_destination(out: Union[str, os.PathLike], *, overwrite: bool) -> str:
    """Refuse an output path that cannot be written safely.

    Parameters
    ----------
    out : path-like
        Output file path.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    str
        The absolute output path.

    Raises
    ------
    OutputPathError
        If the folder does not exist or is not writable, or ``out`` is a folder.
    OutputExistsError
        If ``out`` exists and ``overwrite`` is false.
    """
    out = os.path.abspath(os.fspath(out))
    folder = os.path.dirname(out)
    if os.path.isdir(out):
        raise OutputPathError(f"output {out!r} is a folder; give a file name such as mask.tif")
    if not os.path.isdir(folder):
        raise OutputPathError(f"output folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"output folder {folder!r} is not writable; choose another --out")
    if os.path.exists(out) and not overwrite:
        raise OutputExistsError(f"output {out!r} exists; pass --overwrite to replace it")
    return out


def parse_creation_options(options: Sequence[str]) -> dict[str, str]:
    """Parse ``NAME=VALUE`` GeoTIFF creation options (``--co``).

    Raises
    ------
    UsageError
        For an item without ``=``.
    """
    parsed = {}
    for item in options:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"creation option {item!r} is not NAME=VALUE, e.g. --co COMPRESS=ZSTD")
        parsed[name.strip().upper()] = value.strip()
    return parsed


class MaskWriter:
    """Write a mask block row by block row into a temporary file, then commit.

    Parameters
    ----------
    out : str
        Final path (already checked by :func:`check_destination`).
    profile : mapping
        rasterio profile: ``width``, ``height``, ``count``, ``dtype``,
        ``nodata``, optionally ``crs`` and ``transform``.
    creation_options : mapping, optional
        Extra GDAL creation options overriding the defaults (tiled 512x512,
        DEFLATE with predictor, BIGTIFF=IF_SAFER).
    colormap : mapping, optional
        Colour table for band 1 (class index -> RGBA).
    descriptions : sequence of str, optional
        Band descriptions.
    tags : mapping, optional
        Dataset metadata tags.

    Notes
    -----
    Use as a context manager: leaving the block with an exception (or
    KeyboardInterrupt) removes the temporary file; :meth:`commit` verifies and
    renames it into place.
    """

    def __init__(self, out: str, profile: Mapping[str, Any], *,
                 creation_options: Optional[Mapping[str, str]] = None,
                 colormap: Optional[Mapping[int, tuple]] = None,
                 descriptions: Optional[Sequence[str]] = None,
                 tags: Optional[Mapping[str, str]] = None) -> None:
        self.out = out
        dtype = np.dtype(profile["dtype"])
        predictor = "3" if dtype.kind == "f" else "2"
        options = {"TILED": "YES", "BLOCKXSIZE": str(BLOCK_SIZE), "BLOCKYSIZE": str(BLOCK_SIZE),
                   "COMPRESS": "DEFLATE", "PREDICTOR": predictor, "BIGTIFF": "IF_SAFER"}
        options.update({k.upper(): str(v) for k, v in (creation_options or {}).items()})
        self.profile = {"driver": "GTiff", **profile, **{k.lower(): v for k, v in options.items()}}
        folder, name = os.path.split(out)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part.tif", dir=folder)
        os.close(fd)
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dst = rasterio.open(self.tmp, "w", **self.profile)
            if colormap:
                self._dst.write_colormap(1, dict(colormap))
            for i, d in enumerate(descriptions or (), start=1):
                self._dst.set_band_description(i, d)
            if tags:
                self._dst.update_tags(**tags)
        except Exception:
            self.abort()
            raise

    @property
    def block_rows(self) -> int:
        """Rows per write: the tile height."""
        return int(self.profile.get("blockysize", BLOCK_SIZE))

    def write_rows(self, data: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        """Add finished rows of one column band; written once a block row is full.

        Parameters
        ----------
        data : ndarray of shape (band, rows, cols)
            Values in the output dtype.
        rows, cols : tuple of int
            ``(start, stop)`` output pixels. Rows of one column band must come
            in order, without gaps.
        """
        key = cols
        buf, filled_to = self._buffers.get(key, (None, 0))
        if buf is None:
            height = min(self.block_rows, self.profile["height"])
            buf = np.empty((data.shape[0], height, cols[1] - cols[0]), data.dtype)
            filled_to = rows[0]
        if rows[0] != filled_to:
            raise RuntimeError(f"rows {rows} of columns {cols} arrive out of order (expected {filled_to})")
        start = rows[0]
        while start < rows[1]:
            block0 = (start // self.block_rows) * self.block_rows
            block1 = min(block0 + self.block_rows, self.profile["height"])
            stop = min(rows[1], block1)
            buf[:, start - block0:stop - block0] = data[:, start - rows[0]:stop - rows[0]]
            if stop == block1:
                self._dst.write(buf[:, :block1 - block0],
                                window=Window(cols[0], block0, cols[1] - cols[0], block1 - block0))
            start = stop
        self._buffers[key] = (buf, rows[1])

    def abort(self) -> None:
        """Close and remove the temporary file."""
        dst = getattr(self, "_dst", None)
        if dst is not None and not dst.closed:
            try:
                dst.close()
            except RasterioIOError:
                pass  # the file is being discarded; a close error changes nothing
        for path in (self.tmp, self.tmp + ".aux.xml"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def commit(self) -> None:
        """Close, verify and rename the finished file to ``out``.

        Raises
        ------
        OutputVerificationError
            If a column band was not written to the last row, or the file read
            back does not have the expected size, bands, dtype or georeferencing.
        """
        try:
            unfinished = [c for c, (_, filled) in self._buffers.items() if filled != self.profile["height"]]
            covered = sum(c[1] - c[0] for c in self._buffers)
            if unfinished or covered != self.profile["width"]:
                raise OutputVerificationError(
                    f"output incomplete: columns {unfinished or 'missing'} not written to the last row"
                )
            self._dst.close()
            self._verify()
            os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp made it private (0600)
            os.replace(self.tmp, self.out)
        except BaseException:
            self.abort()
            raise

    def _verify(self) -> None:
        p = self.profile
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self.tmp) as ds:
                got = (ds.width, ds.height, ds.count, ds.dtypes[0])
                want = (p["width"], p["height"], p["count"], np.dtype(p["dtype"]).name)
                problems = []
                if got != want:
                    problems.append(f"size/bands/dtype {got} != {want}")
                if p.get("crs") is not None and ds.crs != p["crs"]:
                    problems.append(f"CRS {ds.crs} != {p['crs']}")
                if p.get("transform") is not None and not ds.transform.almost_equals(p["transform"], precision=1e-9):
                    problems.append(f"transform {tuple(ds.transform)} != {tuple(p['transform'])}")
                # Decoding the last tile proves the file is complete.
                ds.read(1, window=Window(max(0, ds.width - 1), max(0, ds.height - 1), 1, 1))
        if problems:
            raise OutputVerificationError(f"output {self.out!r} failed verification: {'; '.join(problems)}")

    def __enter__(self) -> "MaskWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
