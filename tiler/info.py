"""A scene's description before running: ``tiler info SCENE [--model M]``.

Like ``rio info``, plus what tiler would do with the scene: how each of a
model's channels would be built, the input-domain check's verdict and the
number of patches.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from tiler.config import InferenceConfig
from tiler.domain import PERCENTILES, InputScale, sample_channels
from tiler.errors import BandMismatchError
from tiler.indices import ChannelPlan
from tiler.model import read_info, resolve_model_path
from tiler.plan import PatchGrid
from tiler.scene import open_scene
from tiler.storage import redact

__all__ = ["scene_info", "format_info"]


def scene_info(
    scene: Union[str, os.PathLike],
    *,
    model: Union[None, str, os.PathLike] = None,
    reference: Optional[str] = None,
    bands: Optional[Sequence[int]] = None,
    input_scale: Union[None, InputScale, Sequence[str]] = None,
    overlap: Optional[float] = None,
    patch_size: Optional[int] = None,
    resample: str = "auto",
) -> dict[str, Any]:
    """Describe a scene, and with ``model`` how ``tiler run`` would read it.

    Reads only the metadata and a few hundred small windows (the value
    ranges); the model file's metadata is read without Keras.

    Parameters
    ----------
    scene : path-like
        A raster, a scene manifest or a sensor folder (:func:`tiler.scene.open_scene`).
    model : path-like, optional
        A model file, or a model name (``"default"`` for the bundled one; ``tiler models``).
    reference : str, optional
        Band group whose grid is the reference grid.
    bands, input_scale, overlap, patch_size, resample
        As for :func:`tiler.run_scene` (the patch grid and the domain check use
        them); unset, the patch size and overlap are the model's
        recommendation, resolved as ``tiler run`` resolves them
        (:meth:`tiler.config.InferenceConfig.for_model`).

    Returns
    -------
    dict
        ``width``, ``height``, ``crs``, ``transform``, ``gcps`` (count and
        CRS) and ``rpcs`` (reference point and scales) where the scene has
        them, ``pixel_size_m``,
        ``groups`` (nodata as the run honours it: the declared value, the
        files' own nodata value or ``"mask"`` for an internal mask band;
        bands with dtype, scale, offset and sampled 1st/99th percentile, min
        and max), ``notes``; with a model also ``model``:
        channels with how each is built, the band-mapping method, the domain
        verdict and the patch grid (on the processing grid), or ``error`` where
        the scene cannot provide the model's channels (what ``tiler run`` would
        refuse with); and ``processing_grid``
        (:meth:`tiler.scene.ProcessingGrid.to_dict`: the grid a run works on,
        at the model's pixel size where it records one, and why).

    Raises
    ------
    SceneReadError, ModelFileError, PlanError
        As ``tiler run`` would (a missing channel is reported in ``model["error"]``).
    """

    with open_scene(scene, reference=reference) as sc:
        samples = sample_channels(lambda r, c: sc.read(r, c, range(1, sc.count + 1)), sc.height, sc.width,
                                  strips=sc.striped())
        groups, index = [], 1
        for g in sc.groups:
            grid = sc.grid(g.name)
            entries = []
            for b in g.bands:
                s = samples[index - 1]
                p = np.percentile(s, PERCENTILES).tolist() if s.size else [None, None]
                entries.append({"index": index, "name": b.name, "file": redact(b.path), "file_band": b.index,
                                "dtype": sc.value_dtype(index), "scale": b.scale, "offset": b.offset,
                                "saturation_dn": b.saturation,
                                "sampled": {"p01": p[0], "p99": p[1],
                                            "min": float(s.min()) if s.size else None,
                                            "max": float(s.max()) if s.size else None, "pixels": int(s.size)}})
                index += 1
            groups.append({"name": g.name, "width": grid.width, "height": grid.height,
                           "pixel_size": grid.pixel_size, "placed_by": grid.placed_by, "nodata": sc.nodata(g.name),
                           "bands": entries})
        doc: dict[str, Any] = {
            "path": redact(os.fspath(scene)), "kind": sc.kind, "reference": sc.reference, "width": sc.width,
            "height": sc.height, "count": sc.count, "crs": sc.crs.to_string() if sc.crs else None,
            "transform": list(sc.transform)[:6] if sc.georeferenced else None,
            "gcps": {"count": len(sc.gcps[0]), "crs": sc.gcps[1].to_string()} if sc.gcps else None,
            "rpcs": _rpc_summary(sc.rpcs),
            "pixel_size_m": sc.pixel_size_m(), "groups": groups, "notes": list(sc.notes)}
        if model is None:
            return doc
        from tiler.pipeline import check_patch_size, domain_verdict, run_grid

        path = resolve_model_path(model)
        info = read_info(path)
        try:
            plan = ChannelPlan.for_scene(sc, info.channels, bands=bands)
        except BandMismatchError as exc:
            # The scene is still described; what `tiler run` would say is the model part.
            doc["model"] = {"path": os.fspath(path), "classes": list(info.classes), "error": str(exc)}
            return doc
        channels = [{"channel": c, "built_from": how} for c, how in zip(plan.channels, plan.describe(sc))]
        inference = InferenceConfig(patch_size=patch_size, overlap=overlap, resample=resample).for_model(info)
        pg = run_grid(sc, info, inference)
        doc["processing_grid"] = pg.to_dict()
        verdict = domain_verdict(sc, plan, info, InputScale.parse(input_scale), grid=pg)
        p = check_patch_size(info, inference.patch_size)
        overlap = inference.overlap
        grid = PatchGrid.from_overlap(pg.height, pg.width, patch_size=p, overlap=overlap)
        doc["model"] = {"path": os.fspath(path), "channels": channels, "band_mapping": plan.method,
                        "classes": list(info.classes),
                        "domain": verdict.to_dict() if verdict is not None else None,
                        "grid": {"patch_size": p, "overlap": overlap, "stride": grid.stride,
                                 "patches": grid.count, "patch_rows": grid.rows.count,
                                 "patch_cols": grid.cols.count}}
    return doc


def _rpc_summary(rpcs) -> Optional[dict]:
    """The RPCs' reference point (longitude, latitude, height) and scales, or None."""
    if rpcs is None:
        return None
    return {"lon": rpcs.long_off, "lat": rpcs.lat_off, "height": rpcs.height_off,
            "lon_scale": rpcs.long_scale, "lat_scale": rpcs.lat_scale}


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.6g}"


def format_info(doc: dict) -> str:
    """Render :func:`scene_info` as plain text."""
    lines = [f"scene      {doc['path']} ({doc['kind']})",
             f"size       {doc['width']} x {doc['height']} px (width x height), {doc['count']} band(s)",
             ]
    if doc["transform"] or doc["crs"]:
        lines.append(f"crs        {doc['crs'] or 'none'}")
    if doc["transform"]:
        lines.append(f"transform  {', '.join(_num(v) for v in doc['transform'])}")
    if doc.get("gcps"):
        lines.append(f"gcps       {doc['gcps']['count']} GCPs in {doc['gcps']['crs']} (no transform: outputs keep "
                     "the GCPs; polygons are placed by GDAL's GCP transformer)")
    if doc.get("rpcs"):
        r = doc["rpcs"]
        lines.append(f"rpcs       rational polynomial coefficients around lon {_num(r['lon'])}, lat {_num(r['lat'])}, "
                     f"height {_num(r['height'])} m (outputs keep them; polygons in WGS 84)")
    if not (doc["transform"] or doc["crs"] or doc.get("gcps") or doc.get("rpcs")):
        lines.append("crs        none (not georeferenced: outputs in pixel coordinates)")
    lines.append(f"pixel size {_num(doc['pixel_size_m'])} m" if doc["pixel_size_m"] else "pixel size unknown")
    lines.append(f"reference  group {doc['reference']!r}")
    for g in doc["groups"]:
        lines.append(f"group {g['name']}: {g['width']} x {g['height']} px, pixel {_num(g['pixel_size'])}, "
                     f"placed by {g['placed_by']}, nodata {g['nodata']}")
        lines.append(f"  {'band':>4} {'name':<12} {'dtype':<8} {'scale':>10} {'offset':>8} "
                     f"{'p01':>10} {'p99':>10} {'min':>10} {'max':>10}")
        for b in g["bands"]:
            s = b["sampled"]
            lines.append(f"  {b['index']:>4} {str(b['name'] or '-'):<12} {b['dtype']:<8} {_num(b['scale']):>10} "
                         f"{_num(b['offset']):>8} {_num(s['p01']):>10} {_num(s['p99']):>10} {_num(s['min']):>10} "
                         f"{_num(s['max']):>10}")
    for n in doc["notes"]:
        lines.append(f"note: {n}")
    m = doc.get("model")
    if m:
        lines.append(f"model      {m['path']}: classes {', '.join(m['classes'])}")
        if "error" in m:
            lines.append(f"channels   cannot be built: {m['error']}")
            return "\n".join(lines)
        lines.append(f"channels   ({m['band_mapping']}) " + "; ".join(f"{c['channel']} <- {c['built_from']}"
                                                                      for c in m["channels"]))
        d = m["domain"]
        if d is None:
            lines.append("domain     not recorded in the model file: not checked")
        else:
            lines.append("domain     " + ("ok" if d["ok"] else "REFUSED: " + "; ".join(d["problems"])))
            for w in d["warnings"]:
                lines.append(f"           warning: {w}")
        pg = doc["processing_grid"]
        lines.append(f"processing {pg['width']} x {pg['height']} px of {_num(pg['pixel_size'])} "
                     f"({pg['resampling']}): {pg['reason']}")
        gr = m["grid"]
        lines.append(f"patches    {gr['patches']} ({gr['patch_rows']} x {gr['patch_cols']}) of {gr['patch_size']} px, "
                     f"stride {gr['stride']} px (overlap {gr['overlap']})")
    return "\n".join(lines)
