"""Scenes described by STAC Items (SpatioTemporal Asset Catalog, read with ``pystac``), local or at a URL.

An Item's raster assets become band groups: assets on one pixel grid form one
group, named by its pixel size (``10m``) where the CRS is in metres. Bands
are named by the ``eo:bands`` common names (STAC ``eo`` extension v1, or the
``bands`` field of STAC 1.1; ``STAC_COMMON_NAMES`` maps those tiler calls
otherwise, ``swir16`` to ``swir1`` ...), else by the asset key; ``raster:bands`` scale,
offset and nodata are applied (STAC ``raster`` extension). An asset whose
href is a URL (``https://``, ``s3://`` ...) is read where it is, by GDAL's
range requests; nothing is downloaded whole.

A scene string names an Item file, or one Item of an ItemCollection file as
``collection.json#ITEM_ID``.

References
----------
STAC specification 1.0/1.1, https://github.com/radiantearth/stac-spec; ``eo`` extension,
https://github.com/stac-extensions/eo; ``raster`` extension, https://github.com/stac-extensions/raster.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any, Optional, Union
from urllib.parse import urlparse

from tiler.errors import SceneReadError, TilerError
from tiler.scene._bands import Band, BandGroup
from tiler.scene._layouts import Layout
from tiler.storage import READ_SCHEMES, configure_gdal, explain, is_url, read_bytes, redact

__all__ = ["is_stac", "split_scene", "read_stac_item", "stac_items", "stac_asset_paths", "RASTER_MEDIA"]

#: Media types of raster assets (others, thumbnails and metadata, are not bands).
RASTER_MEDIA = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")
#: Asset roles that are never bands.
_SKIP_ROLES = {"thumbnail", "overview", "metadata", "visual"}


def split_scene(scene: Union[str, "os.PathLike[str]"]) -> tuple[str, Optional[str]]:
    """The file a scene string names, and the STAC Item it picks.

    ``("collection.json", "ITEM_ID")`` for ``collection.json#ITEM_ID``;
    ``(scene, None)`` for anything else (a ``#`` elsewhere is part of the name).
    No file is opened.
    """
    scene = os.fspath(scene)
    path, sep, item = scene.rpartition("#")
    if sep and path.lower().endswith(".json"):
        return path, item
    return scene, None


def is_stac(scene: str) -> bool:
    """Whether a scene string names a STAC JSON file (an Item, or an Item of a collection with ``#ID``)."""
    return split_scene(scene)[0].lower().endswith(".json")



def _load(path: str) -> dict:
    try:
        if is_url(path):
            doc = json.loads(read_bytes(path, "STAC document"))
        else:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
    except (OSError, ValueError) as exc:
        if isinstance(exc, TilerError):
            raise
        raise SceneReadError(f"cannot read {redact(path)!r} as STAC JSON: {exc}") from None
    if not isinstance(doc, dict) or "type" not in doc:
        raise SceneReadError(f"{path!r} is not a STAC document (no 'type'); pass an Item, ItemCollection or "
                             "Catalog")
    return doc


def stac_items(path: str) -> list[Any]:
    """The Items of a local STAC file: an Item, an ItemCollection, or a Catalog/Collection (walked).

    Parameters
    ----------
    path : str
        A JSON file.

    Returns
    -------
    list of pystac.Item
        Each with its self href set, so relative asset hrefs resolve.

    Raises
    ------
    SceneReadError
        If the file is not STAC JSON, or holds no Item.
    """
    import pystac

    path = path if is_url(path) else os.path.abspath(path)
    doc = _load(path)
    try:
        if doc["type"] == "Feature":
            items = [pystac.Item.from_dict(doc, href=path, preserve_dict=False)]
            items[0].set_self_href(path)
        elif doc["type"] == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False).items)
            for it in items:
                if it.get_self_href() is None:
                    it.set_self_href(path)
        elif doc["type"] in ("Catalog", "Collection") and is_url(path):
            raise SceneReadError(f"{redact(path)}: a remote STAC {doc['type']} is not walked; pass its Items' URLs, "
                                 "an ItemCollection, or search it (STAC API)")
        elif doc["type"] in ("Catalog", "Collection"):
            items = list(pystac.read_file(path).get_items(recursive=True))
        else:
            raise SceneReadError(f"{path!r}: STAC type {doc['type']!r} is not an Item, ItemCollection or Catalog")
    except pystac.STACError as exc:
        raise SceneReadError(f"{path!r} is not valid STAC: {exc}") from None
    if not items:
        raise SceneReadError(f"{path!r} holds no STAC Item; nothing to run")
    return items


def _item(scene: str):
    path, item_id = split_scene(scene)
    items = stac_items(path)
    if item_id is None:
        if len(items) > 1:
            raise SceneReadError(f"{path!r} holds {len(items)} Items; name one as {path}#ITEM_ID "
                                 f"(e.g. {path}#{items[0].id}), or run them all with `tiler batch {path}`")
        return items[0]
    for it in items:
        if it.id == item_id:
            return it
    raise SceneReadError(f"{path!r} has no Item {item_id!r}; its Items: {', '.join(i.id for i in items[:10])}")


def _band_assets(item) -> "OrderedDict[str, tuple[str, Any]]":
    """Raster assets of an Item: key -> (local path, asset); remote hrefs refused."""
    out: OrderedDict[str, tuple[str, Any]] = OrderedDict()
    for key, asset in item.assets.items():
        roles = set(asset.roles or ())
        media = (asset.media_type or "").split(";")[0].strip().lower()
        if roles & _SKIP_ROLES and "data" not in roles:
            continue
        if media and media not in RASTER_MEDIA:
            continue
        href = asset.get_absolute_href() or asset.href
        scheme = urlparse(href).scheme
        if is_url(href):
            out[key] = (href, asset)  # read where it is (GDAL's range requests); a missing one is said on opening
            continue
        if scheme not in ("", "file") and len(scheme) > 1:
            raise SceneReadError(
                f"asset {key!r} of STAC Item {item.id!r} has the href {redact(href)}: tiler reads local files and "
                f"{', '.join(s + '://' for s in READ_SCHEMES)} URLs")
        local = urlparse(href).path if scheme == "file" else href
        if not os.path.isfile(local):
            raise SceneReadError(f"asset {key!r} of STAC Item {item.id!r}: file {local!r} does not exist")
        out[key] = (local, asset)
    if not out:
        raise SceneReadError(f"STAC Item {item.id!r} has no raster asset (image/tiff or image/jp2 with role data)")
    return out


def stac_asset_paths(scene: str) -> list[str]:
    """The files of a STAC scene string (the JSON file and its raster assets, paths or URLs); [] where unreadable."""

    try:
        return [split_scene(scene)[0], *(p for p, _ in _band_assets(_item(scene)).values())]
    except TilerError:
        return [split_scene(scene)[0]]


#: STAC ``eo`` common band names (eo extension v1.1.0, "Common Band Names") that tiler calls otherwise:
#: Earth Search and Planetary Computer name Sentinel-2's B11/B12 ``swir16``/``swir22``, B8A ``nir08``, B09
#: ``nir09``, and Landsat's TIRS bands ``lwir11``/``lwir12``.
STAC_COMMON_NAMES = {"swir16": "swir1", "swir22": "swir2", "nir08": "nir2", "nir09": "watervapour",
                     "lwir11": "tir1", "lwir12": "tir2"}


def _asset_bands(key: str, asset, count: int) -> list[dict]:
    """Per band of an asset: name, scale, offset, nodata, spectral range (nm)."""
    fields = asset.extra_fields
    eo = fields.get("eo:bands") or fields.get("bands") or []
    raster = fields.get("raster:bands") or []
    out = []
    for i in range(count):
        e = eo[i] if i < len(eo) and isinstance(eo[i], dict) else {}
        r = raster[i] if i < len(raster) and isinstance(raster[i], dict) else {}
        if not r and "bands" in fields and isinstance(e, dict):
            r = e  # STAC 1.1 puts scale/offset/nodata in the same band objects
        name = e.get("common_name") or e.get("eo:common_name") or (e.get("name") if count > 1 else None) or \
            (key if count == 1 else f"{key}_{i + 1}")
        centre = e.get("center_wavelength") or e.get("eo:center_wavelength")
        width = e.get("full_width_half_max") or e.get("eo:full_width_half_max")
        rng = (1000 * (centre - width / 2), 1000 * (centre + width / 2)) if centre and width else None
        name = str(name).lower()
        out.append({"name": STAC_COMMON_NAMES.get(name, name), "scale": float(r.get("scale", 1.0)),
                    "offset": float(r.get("offset", 0.0)), "nodata": r.get("nodata"), "range": rng})
    return out


def read_stac_item(scene: str) -> Layout:
    """The band groups of a local STAC Item.

    Parameters
    ----------
    scene : str
        An Item JSON file, or ``collection.json#ITEM_ID``.

    Returns
    -------
    Layout
        Kind ``stac``; groups by pixel grid (finest first), each with the
        ``raster:bands`` scale/offset of its bands and their common nodata.

    Raises
    ------
    SceneReadError
        Not STAC, no such Item, a remote or missing asset, an asset that is
        not a raster, or one group's assets disagreeing on nodata.
    """
    import rasterio  # here, not at import: the command line splits scene paths without it

    item = _item(scene)
    grids: "OrderedDict[tuple, list[tuple[str, str, dict]]]" = OrderedDict()
    info: dict[tuple, tuple[float, bool]] = {}
    for key, (path, asset) in _band_assets(item).items():
        if is_url(path):
            configure_gdal()
        try:
            with rasterio.open(path) as ds:
                grid = (ds.width, ds.height, tuple(round(v, 6) for v in ds.transform[:6]), str(ds.crs))
                metres = bool(ds.crs and ds.crs.is_projected and (ds.crs.linear_units or "").lower()
                              in ("metre", "meter", "m"))
                info[grid] = (abs(ds.transform.a), metres)
                count = ds.count
        except rasterio.errors.RasterioIOError as exc:
            what = f"asset {key!r} of STAC Item {item.id!r}:"
            raise (explain(path, str(exc), what) if is_url(path) else None) or \
                SceneReadError(f"{what} cannot open {redact(path)!r}: {exc}") from None
        for i, band in enumerate(_asset_bands(key, asset, count), start=1):
            grids.setdefault(grid, []).append((path, i, band))
    groups = []
    for n, (grid, bands) in enumerate(sorted(grids.items(), key=lambda kv: info[kv[0]][0])):
        size, metres = info[grid]
        name = f"{size:g}m" if metres else f"g{n + 1}"
        nodatas = {b["nodata"] for _, _, b in bands}
        if len(nodatas) > 1:
            raise SceneReadError(f"STAC Item {item.id!r}: assets of group {name} declare different nodata "
                                 f"values {sorted(map(str, nodatas))}; tiler needs one per band group")
        nodata = nodatas.pop()
        groups.append(BandGroup(name, tuple(Band(b["name"], p, i, scale=b["scale"], offset=b["offset"],
                                                 spectral_range=b["range"]) for p, i, b in bands),
                                nodata=None if nodata is None else float(nodata)))
    return Layout("stac", tuple(groups), None, (f"STAC Item {item.id}: {len(groups)} band group(s) from its assets",))
