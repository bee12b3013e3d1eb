"""Atomic, tiled, compressed GeoTIFF output.

The mask is written to a temporary file of its :class:`tiler.destination.Destination`
and renamed into place only when complete and verified (DESIGN.md, invariants
6 and 9). Rows are buffered into whole blocks of tiles, so every compressed tile
is written exactly once, in order, whatever the strip height.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from tiler._logging import quiet_stderr
from tiler.destination import Destination, gdal_messages, write_failure
from tiler.errors import OutputVerificationError, UsageError

__all__ = ["BLOCK_SIZE", "CLASS_NODATA", "DEFAULT_CREATION_OPTIONS", "parse_creation_options",
           "check_creation_options", "MaskWriter"]

#: Tile side of the output GeoTIFF (DESIGN.md, "Output").
BLOCK_SIZE = 512
#: Nodata value of the uint8 class map (class indices use 0..254).
CLASS_NODATA = 255
#: Creation options of every GeoTIFF tiler writes (DESIGN.md, "Output");
#: ``PREDICTOR`` is set by dtype (2 for integers, 3 for floats). ``NUM_THREADS``:
#: GDAL compresses the tiles of a block row in parallel (measured on the 8k²
#: near-free run, benchmarks/end_to_end.py: the write stage 0.39 -> 0.25 s; it
#: overlaps the network, so the wall time gains where the host is the bottleneck).
DEFAULT_CREATION_OPTIONS = {"TILED": "YES", "BLOCKXSIZE": str(BLOCK_SIZE), "BLOCKYSIZE": str(BLOCK_SIZE),
                            "COMPRESS": "DEFLATE", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}
#: TIFF tiles must be a multiple of 16 pixels on each side (TIFF 6.0, section 15).
_TILE_MULTIPLE = 16


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


def _options_for(dtype: Any, creation_options: Optional[Mapping[str, str]]) -> dict[str, str]:
    options = dict(DEFAULT_CREATION_OPTIONS)
    options["PREDICTOR"] = "3" if np.dtype(dtype).kind == "f" else "2"
    user = {k.upper(): str(v) for k, v in (creation_options or {}).items()}
    if user.get("COMPRESS", "").upper() in ("NONE", "JPEG", "WEBP", "JXL", "LERC") and "PREDICTOR" not in user:
        del options["PREDICTOR"]  # these codecs take no predictor
    options.update(user)
    return options


def check_creation_options(creation_options: Optional[Mapping[str, str]], *, dtype: Any = "uint8",
                           count: int = 1) -> dict[str, str]:
    """Validate GeoTIFF creation options before any work starts.

    GDAL only warns about an unknown option or a bad value (``COMPRESS=FOO``)
    and then writes something else; here its validation runs on a tiny
    in-memory file with the same options, and any complaint is an error. Tile
    sides (which GDAL accepts silently) must be multiples of 16 (TIFF 6.0).

    Parameters
    ----------
    creation_options : mapping of str to str, optional
        User options (``--co``), names in any case.
    dtype : dtype-like, default "uint8"
        The output's data type (the predictor depends on it).
    count : int, default 1
        The output's band count.

    Returns
    -------
    dict of str to str
        The full option set the output will be written with (defaults, then the
        user's).

    Raises
    ------
    UsageError
        Naming the rejected option, GDAL's reason and the fix (CLI exit code 2).
    """
    options = _options_for(dtype, creation_options)
    for key in ("BLOCKXSIZE", "BLOCKYSIZE"):
        try:
            side = int(options[key])
        except ValueError:
            side = -1
        if side < _TILE_MULTIPLE or side % _TILE_MULTIPLE:
            raise UsageError(f"--co {key}={options[key]}: GeoTIFF tiles must be a positive multiple of "
                             f"{_TILE_MULTIPLE} pixels; use e.g. {key}={BLOCK_SIZE}")
    side = _TILE_MULTIPLE
    with gdal_messages() as messages, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open("/vsimem/tiler-check-options.tif", "w", driver="GTiff", width=side, height=side,
                               count=count, dtype=np.dtype(dtype).name,
                               **{k.lower(): v for k, v in options.items()}) as ds:
                ds.write(np.zeros((count, side, side), np.dtype(dtype)))
        except (RasterioIOError, ValueError, TypeError) as exc:
            messages.append(str(exc))
        finally:
            try:
                rasterio.shutil.delete("/vsimem/tiler-check-options.tif")
            except (RasterioIOError, OSError):
                pass
    problems = [m for m in messages if "creation option" in m.lower() or "not recognised" in m.lower()
                or "not supported" in m.lower() or "illegal" in m.lower()]
    if problems:
        raise UsageError(f"GeoTIFF creation options refused: {'; '.join(dict.fromkeys(problems))}. Fix or drop "
                         "the --co option (e.g. --co COMPRESS=ZSTD, --co COMPRESS=DEFLATE)")
    return options


class MaskWriter:
    """Write a mask block row by block row into a temporary file, then commit.

    Parameters
    ----------
    destination : Destination
        Where the file goes, already checked and locked by
        :func:`tiler.destination.guard_outputs`.
    profile : mapping
        rasterio profile: ``width``, ``height``, ``count``, ``dtype``,
        ``nodata``, optionally ``crs`` and ``transform``, or ``gcps`` (with
        their ``crs``) and ``rpcs``.
    creation_options : mapping, optional
        Extra GDAL creation options overriding the defaults (tiled 512x512,
        DEFLATE with predictor, BIGTIFF=IF_SAFER); validate them first with
        :func:`check_creation_options`.
    colormap : mapping, optional
        Colour table for band 1 (class index -> RGBA).
    descriptions : sequence of str, optional
        Band descriptions.
    tags : mapping, optional
        Dataset metadata tags.
    mask : bool, default False
        Write validity to an internal mask band (GDAL's per-dataset mask)
        instead of a nodata value: for dtypes where every value is data
        (uint8-scaled probabilities); pass ``valid`` to :meth:`write_rows`.
    scales : sequence of float, optional
        Band scale factors (GDAL metadata: physical value = stored * scale).

    Notes
    -----
    Use as a context manager: leaving the block with an exception (or
    KeyboardInterrupt) removes the temporary file; :meth:`commit` verifies and
    renames it into place.
    """

    def __init__(self, destination: Destination, profile: Mapping[str, Any], *,
                 creation_options: Optional[Mapping[str, str]] = None,
                 colormap: Optional[Mapping[int, tuple]] = None,
                 descriptions: Optional[Sequence[str]] = None,
                 tags: Optional[Mapping[str, str]] = None, mask: bool = False,
                 scales: Optional[Sequence[float]] = None) -> None:
        self.destination = destination
        self.mask = mask
        self.out = destination.path
        options = _options_for(profile["dtype"], creation_options)
        self.profile = {"driver": "GTiff", **profile, **{k.lower(): v for k, v in options.items()}}
        self._needed = int(profile["width"]) * int(profile["height"]) * int(profile["count"]) \
            * np.dtype(profile["dtype"]).itemsize
        self.tmp = destination.temporary()
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        self._dst = None
        try:
            with warnings.catch_warnings(), self._gdal():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dst = rasterio.open(self.tmp, "w", **self.profile)
                if colormap:
                    self._dst.write_colormap(1, dict(colormap))
                for i, d in enumerate(descriptions or (), start=1):
                    self._dst.set_band_description(i, d)
                if tags:
                    self._dst.update_tags(**tags)
                if scales is not None:
                    self._dst.scales = tuple(scales)
        except BaseException:
            self.abort()
            raise

    @contextmanager
    def _gdal(self):
        """Capture GDAL's messages during a write and turn a full disk into one clear error."""
        with gdal_messages() as messages, quiet_stderr():
            try:
                yield
            except OSError as exc:
                failure = write_failure(exc, self.out, self.tmp, messages=messages, needed_bytes=self._needed)
                if failure is None:
                    raise
                self.abort()
                raise failure from None

    @property
    def block_rows(self) -> int:
        """Rows per write: the tile height."""
        return int(self.profile.get("blockysize", BLOCK_SIZE))

    def write_rows(self, data: np.ndarray, rows: tuple[int, int], cols: tuple[int, int],
                   valid: Optional[np.ndarray] = None) -> None:
        """Add finished rows of one column band; written once a block row is full.

        Parameters
        ----------
        data : ndarray of shape (band, rows, cols)
            Values in the output dtype.
        rows, cols : tuple of int
            ``(start, stop)`` output pixels. Rows of one column band must come
            in order, without gaps.
        valid : ndarray of shape (rows, cols), bool, optional
            Validity, required when the writer has a mask band.
        """
        if self.mask and valid is None:
            raise ValueError("this writer has a mask band: pass valid=")
        key = cols
        buf, mbuf, filled_to = self._buffers.get(key, (None, None, 0))
        if buf is None:
            height = min(self.block_rows, self.profile["height"])
            buf = np.empty((data.shape[0], height, cols[1] - cols[0]), data.dtype)
            mbuf = np.empty((height, cols[1] - cols[0]), np.uint8) if self.mask else None
            filled_to = rows[0]
        if rows[0] != filled_to:
            raise RuntimeError(f"rows {rows} of columns {cols} arrive out of order (expected {filled_to})")
        start = rows[0]
        while start < rows[1]:
            block0 = (start // self.block_rows) * self.block_rows
            block1 = min(block0 + self.block_rows, self.profile["height"])
            stop = min(rows[1], block1)
            buf[:, start - block0:stop - block0] = data[:, start - rows[0]:stop - rows[0]]
            if mbuf is not None:
                np.multiply(valid[start - rows[0]:stop - rows[0]], 255, out=mbuf[start - block0:stop - block0],
                            casting="unsafe")
            if stop == block1:
                window = Window(cols[0], block0, cols[1] - cols[0], block1 - block0)
                with self._gdal():
                    self._dst.write(buf[:, :block1 - block0], window=window)
                    if mbuf is not None:
                        self._dst.write_mask(mbuf[:block1 - block0], window=window)
            start = stop
        self._buffers[key] = (buf, mbuf, rows[1])

    def abort(self) -> None:
        """Close and remove the temporary file."""
        dst = getattr(self, "_dst", None)
        if dst is not None and not dst.closed:
            try:
                with gdal_messages():
                    dst.close()
            except RasterioIOError:
                pass  # the file is being discarded; a close error changes nothing
        self.destination.discard()

    def commit(self) -> None:
        """Close, verify and rename the finished file to its destination.

        Raises
        ------
        DiskFullError
            If the disk (or the file-size limit) filled.
        OutputExistsError
            If, without ``overwrite``, a file appeared at the destination meanwhile.
        OutputVerificationError
            If a column band was not written to the last row, or the file read
            back does not have the expected size, bands, dtype or georeferencing.
        """
        try:
            self.finish()
            self.destination.commit()
        except BaseException:
            self.abort()
            raise

    def finish(self) -> str:
        """Close and verify the temporary file; return its path (:meth:`commit` then renames it).

        Raises
        ------
        DiskFullError, OutputVerificationError
            As for :meth:`commit`; the caller aborts.
        """
        if self._dst.closed:
            return self.tmp
        unfinished = [c for c, (_, _, filled) in self._buffers.items() if filled != self.profile["height"]]
        covered = sum(c[1] - c[0] for c in self._buffers)
        if unfinished or covered != self.profile["width"]:
            raise OutputVerificationError(
                f"output incomplete: columns {unfinished or 'missing'} not written to the last row"
            )
        with self._gdal():
            self._dst.close()
        self._verify()
        return self.tmp

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
                if p.get("gcps"):
                    if len(ds.gcps[0]) != len(p["gcps"]) or ds.gcps[1] != p.get("crs"):
                        problems.append(f"{len(ds.gcps[0])} GCPs in {ds.gcps[1]} != {len(p['gcps'])} in {p.get('crs')}")
                elif p.get("crs") is not None and ds.crs != p["crs"]:
                    problems.append(f"CRS {ds.crs} != {p['crs']}")
                if p.get("rpcs") is not None and ds.rpcs is None:
                    problems.append("the RPCs were not written")
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
