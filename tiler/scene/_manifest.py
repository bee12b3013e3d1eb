"""The scene manifest: a small TOML file naming band groups and their files.

Example (the shared Sentinel-2 scene, 10 m bands as the reference grid)::

    reference = "10m"

    [groups.10m]
    files = ["s2_B02.jp2", "s2_B03.jp2", "s2_B04.jp2", "s2_B08.jp2"]
    bands = ["blue", "green", "red", "nir"]
    scale = 0.0001
    nodata = 0

    [groups.20m]
    files = ["s2_B05.jp2", "s2_B8A.jp2", "s2_B11.jp2", "s2_B12.jp2"]
    bands = ["rededge1", "nir2", "swir1", "swir2"]
    scale = 0.0001
    nodata = 0
    resampling = "cubic"

Paths are relative to the manifest's folder (its URL prefix for a manifest read
from a URL); a file may also be a URL (``https://``, ``s3://``, ...).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tiler.errors import SceneReadError
from tiler.scene._bands import Band, BandGroup
from tiler.scene._cloudmask import CLOUD_MASK_KINDS, CloudMask
from tiler.scene._layouts import Layout
from tiler.storage import configure_gdal, explain, is_url, join, read_bytes, redact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["read_manifest", "GROUP_KEYS"]

#: Keys a ``[groups.NAME]`` table may have.
GROUP_KEYS = ("files", "bands", "indexes", "scale", "offset", "nodata", "saturation", "resampling",
              "downsampling", "register", "anchor", "spectral_ranges")


def _per_band(value: Any, n: int, key: str, where: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * n
    if isinstance(value, list) and len(value) == n and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    raise SceneReadError(f"{where}: {key} must be a number or a list of {n} numbers (one per band), got {value!r}")


def _group(name: str, table: dict, folder: str, where: str) -> BandGroup:
    where = f"{where} [groups.{name}]"
    unknown = sorted(set(table) - set(GROUP_KEYS))
    if unknown:
        raise SceneReadError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(GROUP_KEYS)}")
    files = table.get("files")
    if isinstance(files, str):
        files = [files]
    if not files or not all(isinstance(f, str) for f in files):
        raise SceneReadError(f"{where}: 'files' must list the group's raster file(s), got {files!r}")
    paths = [_resolve(folder, f) for f in files]
    for p in paths:
        if not is_url(p) and not os.path.isfile(p):
            raise SceneReadError(f"{where}: file {p!r} does not exist; paths are relative to the manifest's folder")
    indexes = table.get("indexes")
    slots: list[tuple[str, int]] = []
    if indexes is not None:
        if len(paths) != 1 or not isinstance(indexes, list) or not all(isinstance(i, int) for i in indexes):
            raise SceneReadError(f"{where}: 'indexes' (1-based band indexes) needs exactly one file and a "
                                 f"list of integers, got files={files!r}, indexes={indexes!r}")
        slots = [(paths[0], i) for i in indexes]
    else:
        import rasterio  # here, not at import: the command line checks scene paths without it

        for p in paths:
            if is_url(p):
                configure_gdal()
            try:
                with rasterio.open(p) as ds:
                    count = ds.count
            except rasterio.errors.RasterioIOError as exc:
                raise (explain(p, str(exc), f"{where}: file") if is_url(p) else None) or \
                    SceneReadError(f"{where}: cannot open {redact(p)!r} as a raster: {exc}") from None
            slots += [(p, i) for i in range(1, count + 1)]
    names = table.get("bands")
    if not isinstance(names, list) or len(names) != len(slots) or not all(isinstance(n, str) for n in names):
        raise SceneReadError(
            f"{where}: 'bands' must name each of the group's {len(slots)} band(s) in file order, got {names!r}"
        )
    scales = _per_band(table.get("scale", 1.0), len(slots), "scale", where)
    offsets = _per_band(table.get("offset", 0.0), len(slots), "offset", where)
    ranges = table.get("spectral_ranges")
    if ranges is not None and (not isinstance(ranges, list) or len(ranges) != len(slots)):
        raise SceneReadError(f"{where}: 'spectral_ranges' must give [low, high] nm per band, got {ranges!r}")
    saturation = table.get("saturation")
    if saturation is not None and not isinstance(saturation, (int, float)):
        raise SceneReadError(f"{where}: saturation must be a number (the digital number of a saturated pixel), "
                             f"got {saturation!r}")
    bands = tuple(
        Band(n.strip().lower(), p, i, scale=s, offset=o,
             spectral_range=tuple(float(v) for v in ranges[k]) if ranges else None,
             saturation=None if saturation is None else float(saturation))
        for k, ((p, i), n, s, o) in enumerate(zip(slots, names, scales, offsets))
    )
    try:
        return BandGroup(
            name, bands,
            resampling=table.get("resampling", "bilinear"),
            downsampling=table.get("downsampling", "average"),
            nodata=float(table["nodata"]) if "nodata" in table else None,
            register=bool(table.get("register", True)),
            anchor=table.get("anchor"),
        )
    except ValueError as exc:
        raise SceneReadError(f"{where}: {exc}") from None


def _resolve(folder: str, file: str) -> str:
    """A manifest's file name as a path or URL: a URL as it is, else relative to the manifest's folder
    (a URL prefix for a remote manifest)."""
    if is_url(file):
        return file
    if is_url(folder):
        return join(folder, file)
    return os.path.normpath(os.path.join(folder, file))


def read_manifest(path: str) -> Layout:
    """Read a scene manifest.

    Parameters
    ----------
    path : str
        A TOML file (local, or at an ``https://`` or ``s3://`` URL) with an optional top-level
        ``reference = "GROUP"`` and one ``[groups.NAME]`` table per band group with keys: ``files`` (list of
        rasters, relative to the manifest, or URLs), ``bands`` (a common name per band,
        in file order), optional ``indexes`` (1-based bands of a single file),
        ``scale`` and ``offset`` (number or per-band list: ``value = dn * scale +
        offset``), ``nodata``, ``saturation`` (DN of a saturated pixel),
        ``resampling`` (upsampling method, default
        bilinear), ``downsampling`` (default average), ``register`` (default
        true), ``anchor`` (group to register against) and ``spectral_ranges``
        (``[low, high]`` nm per band, for names tiler does not know). An
        optional ``[cloud_mask]`` table (``file``, ``kind``: one of
        :data:`tiler.scene.CLOUD_MASK_KINDS`) names the product's cloud mask,
        which registration then uses to screen clouds.

    Returns
    -------
    Layout

    Raises
    ------
    SceneReadError
        If the file is not valid TOML, a key is unknown or a value is wrong; the
        message names the table and key.
    """
    try:
        if is_url(path):
            doc = tomllib.loads(read_bytes(path, "scene manifest").decode("utf-8"))
        else:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SceneReadError(f"scene manifest {path!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"reference", "groups", "cloud_mask"})
    if unknown:
        raise SceneReadError(f"scene manifest {path!r}: unknown top-level key(s) {', '.join(unknown)}; "
                             "allowed: reference, groups, cloud_mask")
    groups_doc = doc.get("groups")
    if not isinstance(groups_doc, dict) or not groups_doc:
        raise SceneReadError(f"scene manifest {path!r} has no [groups.NAME] tables; add one per band group")
    folder = path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(os.path.abspath(path))
    groups = tuple(_group(name, table, folder, f"scene manifest {path!r}") for name, table in groups_doc.items())
    reference = doc.get("reference")
    if reference is not None and reference not in groups_doc:
        raise SceneReadError(f"scene manifest {path!r}: reference {reference!r} is not one of its groups "
                             f"({', '.join(groups_doc)})")
    return Layout("manifest", groups, reference, cloud_mask=_cloud_mask(doc.get("cloud_mask"), folder, path))


def _cloud_mask(table: Any, folder: str, path: str):
    if table is None:
        return None
    where = f"scene manifest {path!r} [cloud_mask]"
    if not isinstance(table, dict) or set(table) != {"file", "kind"} or not isinstance(table["file"], str):
        raise SceneReadError(f"{where}: give file = \"mask.tif\" and kind = one of {', '.join(CLOUD_MASK_KINDS)}")
    if table["kind"] not in CLOUD_MASK_KINDS:
        raise SceneReadError(f"{where}: kind {table['kind']!r} is not one of {', '.join(CLOUD_MASK_KINDS)}")
    file = _resolve(folder, table["file"])
    if not is_url(file) and not os.path.exists(file):
        raise SceneReadError(f"{where}: file {file!r} does not exist")
    return CloudMask(file, table["kind"])
