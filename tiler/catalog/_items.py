"""A STAC Item for every result, a static Catalog for a batch, and the model described by STAC MLM.

References
----------
STAC 1.1.0, https://github.com/radiantearth/stac-spec; classification extension v1.1.0,
https://github.com/stac-extensions/classification; processing extension v1.1.0,
https://github.com/stac-extensions/processing; raster extension v1.1.0,
https://github.com/stac-extensions/raster; Machine Learning Model extension v1.5.2,
https://github.com/stac-extensions/mlm.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from typing import Any, Mapping, Optional

import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds

from tiler._version import __version__
from tiler.model import ModelInfo, classification_classes, mlm_properties, model_asset
from tiler.scene import split_scene, stac_items
from tiler.storage import is_url, redact

__all__ = ["EXTENSIONS", "result_item", "catalog_document", "source_item"]

#: The schema URLs of the extensions tiler's Items declare.
EXTENSIONS = {
    "classification": "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "mlm": "https://stac-extensions.github.io/mlm/v1.5.2/schema.json",
}
STAC_VERSION = "1.1.0"
#: Media types of the products (STAC best practices).
MEDIA = {"cog": "image/tiff; application=geotiff; profile=cloud-optimized", "tif": "image/tiff; application=geotiff",
         ".gpkg": "application/geopackage+sqlite3", ".geojson": "application/geo+json",
         ".fgb": "application/vnd.flatgeobuf", ".parquet": "application/vnd.apache.parquet", ".csv": "text/csv",
         ".json": "application/json", ".html": "text/html"}


def source_item(scene: str) -> Optional[dict]:
    """The STAC Item a scene string names (``item.json``, ``collection.json#ID``), as a dict with its
    original self link; None for a scene that is not a STAC Item."""
    path, item_id = split_scene(scene)
    if not path.lower().endswith(".json"):
        return None

    for item in stac_items(path):
        if item_id is None or item.id == item_id:
            doc = item.to_dict(include_self_link=False, transform_hrefs=False)
            original = None
            if not is_url(path):
                try:
                    with open(path, encoding="utf-8") as fh:
                        raw = json.load(fh)
                    links = raw.get("links", []) if raw.get("type") == "Feature" else []
                    original = next((lk["href"] for lk in links if lk.get("rel") == "self"), None)
                except (OSError, ValueError):
                    original = None
            doc["_self"] = original or (path if item_id is None else f"{path}#{item_id}")
            return doc
    return None


def _footprint(mask: str) -> tuple[Optional[dict], Optional[list], Optional[int]]:
    """GeoJSON geometry, bbox (WGS 84) and EPSG code of a georeferenced raster; Nones where it is not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(mask) as ds:
            if ds.crs is None:
                return None, None, None
            w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
            epsg = ds.crs.to_epsg()
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    return geometry, [w, s, e, n], epsg


def result_item(*, scene: str, mask: str, mask_href: str, info: ModelInfo, model_name: str, model_href: str,
                cog: bool = False, vector_href: Optional[str] = None, report_href: Optional[str] = None,
                page_href: Optional[str] = None, item_id: Optional[str] = None,
                report: Optional[Mapping[str, Any]] = None) -> dict:
    """The STAC Item of one result: the class map, its polygons, report and page, and how they were made.

    Parameters
    ----------
    scene : str
        The scene the result was computed from (a STAC Item gives the result its id, datetime and
        geometry, and a ``derived_from`` link to it; another scene a ``derived_from`` link to its file).
    mask : str
        The class map as it can be read now (a local file; its footprint and CRS are read from it).
    mask_href : str
        Where the class map is published (a path or URL; the Item's ``mask`` asset).
    info : ModelInfo
        The model's metadata (classes, colours, channels, normalisation, patch size).
    model_name, model_href : str
        The model's name (``--model``) and its file.
    cog : bool, default False
        The mask is a Cloud-Optimized GeoTIFF.
    vector_href, report_href, page_href : str, optional
        The polygons, the run report and the page, where written.
    item_id : str, optional
        The Item's id; default the source Item's id, else the mask's file stem.
    report : mapping, optional
        The run report (its seconds and tiler version go to the processing fields).

    Returns
    -------
    dict
        A STAC 1.1.0 Item declaring the classification, processing, raster and MLM extensions (see
        :data:`EXTENSIONS`); JSON-ready.
    """
    src = source_item(scene)
    geometry, bbox, epsg = _footprint(mask)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    props: dict[str, Any] = {}
    if src is not None:
        for key in ("datetime", "start_datetime", "end_datetime", "platform", "constellation", "instruments"):
            if src["properties"].get(key) is not None:
                props[key] = src["properties"][key]
        geometry = src.get("geometry") or geometry
        bbox = src.get("bbox") or bbox
    props.setdefault("datetime", now if "start_datetime" not in props else None)
    stem = os.path.splitext(os.path.basename(mask_href.rstrip("/")))[0]
    props.update({
        "title": f"{', '.join(info.classes)} from {model_name}",
        "processing:software": {"tiler": __version__},
        "processing:lineage": (f"segmented by tiler {__version__} with the model {model_name}: overlapping patches "
                               "on a global grid, blended with a normalised window, arg-max per pixel"),
        "processing:level": "L4",
        "created": now,
        **mlm_properties(info, model_name),
    })
    classes = classification_classes(info)
    assets: dict[str, dict] = {"mask": {
        "href": mask_href, "type": MEDIA["cog" if cog else "tif"], "title": "class map", "roles": ["data"],
        "classification:classes": classes,
        "raster:bands": [{"data_type": "uint8", "nodata": 255, "sampling": "area"}],
    }}
    if vector_href:
        assets["polygons"] = {"href": vector_href, "title": "polygons of the class map", "roles": ["data"],
                              "type": MEDIA.get(os.path.splitext(vector_href)[1].lower(), "application/octet-stream")}
    if report_href:
        assets["report"] = {"href": report_href, "type": MEDIA[".json"], "title": "run report", "roles": ["metadata"]}
    if page_href:
        assets["page"] = {"href": page_href, "type": MEDIA[".html"], "title": "quick-look page",
                          "roles": ["overview"]}
    assets["model"] = model_asset(model_href, info)
    links = [{"rel": "derived_from", "href": redact(src["_self"]) if src else redact(scene),
              "type": "application/geo+json" if src else MEDIA["tif"],
              "title": f"source {'Item ' + src['id'] if src else 'scene'}"}]
    item = {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": list(EXTENSIONS.values()),
            "id": item_id or (src["id"] if src else stem), "geometry": geometry, "properties": props,
            "links": links, "assets": assets}
    if bbox is not None:
        item["bbox"] = list(bbox)
    if src is not None and src.get("collection"):
        item["properties"]["tiler:source_collection"] = src["collection"]
    if epsg is not None:
        item["properties"]["tiler:epsg"] = epsg
    if report is not None and report.get("seconds"):
        item["properties"]["tiler:seconds"] = report["seconds"].get("total")
    return item


def catalog_document(catalog_id: str, item_hrefs: list[str], *, description: str) -> dict:
    """A static STAC Catalog linking ``item_hrefs`` (relative hrefs beside the catalog)."""
    return {"type": "Catalog", "stac_version": STAC_VERSION, "id": catalog_id, "description": description,
            "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}]
            + [{"rel": "item", "href": href, "type": "application/geo+json"} for href in item_hrefs]}
