"""Publishing a batch's results as a static STAC catalogue, and listing the Items of a search."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Optional, Sequence

from tiler.catalog._items import catalog_document, result_item
from tiler.destination import JSON_SUFFIXES, guard_outputs
from tiler.model import read_info
from tiler.storage import configure_gdal, exists, identity, is_url, join, name_of

log = logging.getLogger(__name__)

__all__ = ["publish_batch", "describe_items"]


def _beside(out: str, suffix: str) -> str:
    """The file beside an output with another suffix (``masks/a.tif`` -> ``masks/a.json``)."""
    stem = out.rsplit(".", 1)[0] if "." in name_of(out) else out
    return stem + suffix


def publish_batch(report: Mapping[str, Any], out_dir: str, *, model: str, model_name: str, cog: bool = False,
                  work_dir: Optional[str] = None) -> dict:
    """A STAC Item beside every mask of a batch and a static Catalog, ``catalog.json``, at ``out_dir``.

    An Item is written for every scene done in this batch (beside its mask, same name, ``.json``), and
    for a skipped scene whose Item is missing; ``catalog.json`` links every Item of the scenes done or
    skipped, so that a nightly batch's catalogue grows with its archive. Both are tiler's index of the
    folder's results and are replaced by each batch (the masks themselves follow ``--overwrite``). Hrefs
    are relative (``./NAME.tif``): the folder or prefix can be moved or served as it is.

    Parameters
    ----------
    report : mapping
        :meth:`tiler.distributed.BatchReport.to_dict`.
    out_dir : str
        The batch's ``--out-dir`` (a folder or an ``s3://`` prefix).
    model : str
        The model file.
    model_name : str
        How the model was named (``--model``), for ``mlm:name``.
    cog : bool, default False
        The masks are Cloud-Optimized GeoTIFFs.
    work_dir : str, optional
        The work folder of an ``s3://`` ``out_dir``.

    Returns
    -------
    dict
        ``{"catalog": its path or URL, "items": [the Items written]}``.

    Raises
    ------
    TilerError
        As :func:`tiler.destination.guard_outputs`; an upload that fails.
    """
    info = read_info(model)
    scenes = [s for s in report["scenes"] if s["status"] in ("done", "skipped") and s.get("out")]
    docs, hrefs = {}, []
    for entry in scenes:
        out = entry["out"]
        item_path = _beside(out, ".json")
        hrefs.append(f"./{name_of(item_path)}")
        if entry["status"] == "skipped" and _exists(item_path):
            continue
        if is_url(out):
            configure_gdal()
        item = result_item(scene=entry["scene"], mask=out, mask_href=f"./{name_of(out)}", info=info,
                           model_name=model_name, model_href=model, cog=cog)
        item["links"] += [{"rel": "root", "href": "./catalog.json", "type": "application/json"},
                          {"rel": "parent", "href": "./catalog.json", "type": "application/json"}]
        docs[item_path] = item
    catalog_path = join(out_dir, "catalog.json") if is_url(out_dir) else os.path.join(out_dir, "catalog.json")
    if not hrefs:  # nothing done or done before: no catalogue to write
        return {"catalog": None, "items": []}
    catalog = catalog_document(f"tiler-{name_of(out_dir.rstrip('/')) or 'results'}", hrefs,
                               description=f"{', '.join(info.classes)} from {model_name}, by tiler")
    outputs = {f"the STAC Item {name_of(p)}": (p, JSON_SUFFIXES) for p in docs}
    outputs["the catalogue"] = (catalog_path, JSON_SUFFIXES)
    with guard_outputs(outputs, overwrite=True, work_dir=work_dir) as guard:
        for label, (path, _) in outputs.items():
            doc = docs.get(path, catalog)
            guard[label].write_text(json.dumps(doc, indent=2))
    return {"catalog": catalog_path, "items": list(docs)}


def _exists(path: str) -> bool:
    if is_url(path):

        return exists(path)
    return os.path.exists(path)


def describe_items(items: Sequence) -> list[str]:
    """One line per Item of a search, for ``tiler batch --list``: id, datetime, cloud cover, assets and
    their size (from the asset's ``file:size``, else one ``HEAD`` request per asset)."""
    lines = []
    for item in items:
        total, known = 0, True
        rasters = [a for a in item.assets.values() if "data" in (a.roles or ())] or list(item.assets.values())
        for asset in rasters:
            size = asset.extra_fields.get("file:size")
            if size is None and is_url(asset.get_absolute_href() or asset.href):
                size = identity(asset.get_absolute_href() or asset.href).get("size")
            if size is None:
                known = False
            else:
                total += int(size)
        cloud = item.properties.get("eo:cloud_cover")
        lines.append(f"{item.id}  {item.properties.get('datetime') or item.properties.get('start_datetime')}  "
                     f"cloud {'-' if cloud is None else f'{cloud:g} %'}  {len(rasters)} data asset(s)  "
                     f"{total / 1e6:.1f} MB{'' if known else ' (some sizes unknown)'}")
    return lines
