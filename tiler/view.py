"""A quick look at a result without GIS software: ``tiler view`` and ``tiler run --html``.

One self-contained HTML file that opens offline from disk and makes no network
request: Leaflet 1.9.4 (BSD-2, vendored in ``tiler/_assets/leaflet``) and the
data are inlined. The map is in the mask's pixel grid (``L.CRS.Simple``: there
are no basemap tiles to fetch offline) and shows

* the scene as a quick-look (a decimated read, from its overviews where it has
  them, stretched to its 2nd-98th percentile per band);
* the class map over it, one image per class (toggles in the legend), with an
  opacity slider;
* the polygons with a tooltip (class, area, mean probability, pixels);
* a legend with each class's colour, area and share of the valid pixels;
* the run report in readable form (domain verdict, band mapping, registration,
  patch grid, seconds per stage).

Large scenes stay light: images are decimated to at most :data:`MAX_SIDE`
pixels on their long side and polygons simplified to half a display pixel, at
most :data:`MAX_POLYGONS` of them (the largest).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import warnings
from typing import Optional, Union

import numpy as np
import rasterio
import rasterio.coords
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler.destination import Destination
from tiler.errors import SceneReadError, TilerError, UsageError
from tiler.labels import BACKGROUND_NAMES
from tiler.model import DEFAULT_COLOURS
from tiler.scene import open_scene
from tiler.storage import configure_gdal, explain, is_url, redact, redact_text

__all__ = ["build_page", "page_scene", "write_page", "MAX_SIDE", "MAX_POLYGONS"]

#: Long side of the embedded images, pixels (the scene as JPEG, the classes as PNG: a few MB at most).
MAX_SIDE = 1600
#: Polygons embedded at most (the largest by area are kept; the page says how many were left out).
MAX_POLYGONS = 5000
#: JPEG quality of the scene's quick-look.
JPEG_QUALITY = 80
_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_assets", "leaflet")


def _png(rgba: np.ndarray) -> str:
    """A data URI of an RGBA (row, col, 4) uint8 image (PNG: exact class colours, transparency)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _jpeg(rgb: np.ndarray) -> str:
    """A data URI of an RGB (row, col, 3) uint8 photograph (JPEG: a tenth of the PNG's size)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _open(path: str, what: str):
    if is_url(path):
        configure_gdal()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise (explain(path, str(exc), f"the {what}") if is_url(path) else None) or \
            SceneReadError(f"cannot read the {what} {redact(path)!r}: {redact_text(str(exc))}") from None


def _display_shape(height: int, width: int) -> tuple[int, int]:
    f = max(1.0, max(height, width) / MAX_SIDE)
    return max(1, int(round(height / f))), max(1, int(round(width / f)))


def _classes(ds) -> tuple[list[str], list[str]]:
    """Class names (the ``TILER_CLASSES`` tag, else the values) and colours (the colour table, else a palette)."""

    tag = ds.tags().get("TILER_CLASSES")
    try:
        cmap = ds.colormap(1)
    except ValueError:
        cmap = None
    if tag:
        names = tag.split(",")
    else:
        names = [str(v) for v in range(int(min(254, np.nanmax(ds.read(1, out_shape=(64, 64)))) + 1))]
    colours = []
    for i in range(len(names)):
        if cmap is not None and i in cmap:
            colours.append("#{:02X}{:02X}{:02X}".format(*cmap[i][:3]))
        else:
            colours.append(DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)])
    return names, colours


def _stretch(data: np.ndarray) -> str:
    """(band, row, col) float64 values (NaN: nodata), one or three bands, stretched per band to their 2nd-98th
    percentile, as a JPEG data URI (nodata black)."""
    shape = data.shape[1:]
    rgb = np.zeros(shape + (3,), np.uint8)
    for k in range(3):
        band = data[k if data.shape[0] == 3 else 0]
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        rgb[..., k] = np.clip(np.nan_to_num((band - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)
    rgb[~np.isfinite(data).all(axis=0)] = 0
    return _jpeg(rgb)


def _is_raster(path: str) -> bool:
    return (is_url(path) or os.path.isfile(path)) and not path.lower().endswith((".toml", ".json"))


def _raster_quicklook(scene: str, shape: tuple[int, int]) -> str:
    """A single raster's first three bands (or its one band), decimated by GDAL (from overviews where it has them)."""
    with _open(scene, "scene") as ds:
        bands = [1, 2, 3] if ds.count >= 3 else [1]
        data = ds.read(bands, out_shape=(len(bands),) + shape, resampling=Resampling.average, masked=True)
    return _stretch(data.astype(np.float64).filled(np.nan))


def _open_on_grid(path: str, height: int, width: int):
    """A manifest, sensor folder or STAC item opened with the band group whose grid is the mask's as reference.

    Raises
    ------
    SceneReadError
        The scene cannot be opened.
    UsageError
        No band group of the scene has the mask's size.
    """

    try:
        scene = open_scene(path)
    except TilerError as exc:
        raise SceneReadError(f"cannot read the scene {path!r}: {exc}") from None
    sizes = {g.name: (scene.grid(g.name).height, scene.grid(g.name).width) for g in scene.groups}
    fits = [name for name, size in sizes.items() if size == (height, width)]
    if not fits:
        scene.close()
        listed = ", ".join(f"{name} {cols}x{rows}" for name, (rows, cols) in sizes.items())
        raise UsageError(f"--scene {path!r} has no band group of the mask's size {width}x{height} ({listed}): "
                         "give the scene the mask was made from")
    if scene.reference in fits:
        return scene
    scene.close()
    return open_scene(path, reference=fits[0])


def _scene_quicklook(path: str, height: int, width: int, shape: tuple[int, int]) -> str:
    """The red, green and blue bands of any scene (else its first band), averaged onto the display grid.

    Each band group is resampled onto the decimated reference grid through the scene's own warper
    (:meth:`tiler.scene.Scene.warp`, area average), in strips of display rows so that memory stays bounded
    on a large scene; radiometric scale applied.
    """
    from affine import Affine

    with _open_on_grid(path, height, width) as scene:
        lookup = scene.band_lookup()
        names = ("red", "green", "blue")
        indexes = [lookup[n] for n in names] if all(n in lookup for n in names) else [1]
        by_group: dict[str, tuple[list[int], list[int]]] = {}
        for k, i in enumerate(indexes):
            group = scene.group_of(i)
            position = scene.group(group).bands.index(scene.band(i))
            by_group.setdefault(group, ([], []))
            by_group[group][0].append(k)
            by_group[group][1].append(position)
        data = np.full((len(indexes),) + shape, np.nan)
        to_display = scene.transform @ Affine.scale(width / shape[1], height / shape[0])
        step = 128
        for r0 in range(0, shape[0], step):
            rows = min(step, shape[0] - r0)
            for group, (ks, positions) in by_group.items():
                part, _ = scene.warp(group, to_display @ Affine.translation(0, r0), (rows, shape[1]),
                                     positions=positions, resampling="average")
                data[ks, r0:r0 + rows] = part
    return _stretch(data)


def _class_layers(ds, names: list[str], colours: list[str], shape: tuple[int, int]) -> list[dict]:
    classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    layers = []
    for k, (name, colour) in enumerate(zip(names, colours)):
        on = classes == k
        if not on.any():
            continue
        rgba = np.zeros(shape + (4,), np.uint8)
        rgba[on] = [int(colour[i:i + 2], 16) for i in (1, 3, 5)] + [255]
        # A background class (clear, background, ... ) starts hidden: it would cover the scene in one colour.
        layers.append({"class": name, "index": k, "colour": colour, "image": _png(rgba),
                       "shown": name.lower() not in BACKGROUND_NAMES})
    return layers


def _legend(ds, names: list[str], colours: list[str]) -> list[dict]:
    """Per class: pixels and area of the full-resolution mask (block by block) and share of the valid pixels."""
    counts = np.zeros(256, np.int64)
    for _, window in ds.block_windows(1):
        counts += np.bincount(ds.read(1, window=window).ravel(), minlength=256)[:256]
    nodata = int(ds.nodata) if ds.nodata is not None else 255
    valid = counts.sum() - counts[nodata]
    georef = ds.crs is not None and not ds.transform.is_identity and ds.crs.is_projected
    pixel_area = abs(ds.transform.determinant) if georef else 1.0
    unit = "m²" if georef else "px"
    return [{"class": n, "colour": c, "pixels": int(counts[k]), "area": float(counts[k] * pixel_area),
             "unit": unit, "share": float(counts[k] / valid) if valid else 0.0}
            for k, (n, c) in enumerate(zip(names, colours)) if k != nodata]


def _largest(path: str, count: int) -> Optional[np.ndarray]:
    """The feature ids of the :data:`MAX_POLYGONS` largest polygons of a file with an ``area`` field, read with
    bounded memory (the ``area`` column alone, then those features); None where there is no such field."""
    import pyogrio

    if count <= MAX_POLYGONS:
        return None
    _, fids, _, fields = pyogrio.raw.read(path, columns=["area"], read_geometry=False, return_fids=True)
    area = np.nan_to_num(np.asarray(fields[0], np.float64), nan=-np.inf)
    keep = np.argpartition(-area, MAX_POLYGONS - 1)[:MAX_POLYGONS]
    return np.sort(np.asarray(fids)[keep])


def _check_place(path: str, crs, bounds, ds) -> None:
    """Refuse polygons that cannot be of the mask: no CRS on a georeferenced mask (or one on a mask that has
    none), or an extent that does not meet the mask's."""
    georef = ds.crs is not None and not ds.transform.is_identity
    if crs and not georef:
        raise UsageError(f"--vector {path!r} is in a CRS but the mask is not georeferenced by a transform (GCPs, "
                         "RPCs or none): its polygons cannot be placed on the mask's grid; write them to .gpkg "
                         "from the same run")
    if georef and not crs:
        raise UsageError(f"--vector {path!r} has no CRS (pixel coordinates?) but the mask is georeferenced in "
                         f"{ds.crs.to_string()}: its polygons cannot be placed on the mask; give the polygons of "
                         "this mask (tiler run --vector, or tiler vectorize MASK)")
    if bounds is None or not np.all(np.isfinite(bounds)):
        return
    left, bottom, right, top = bounds
    if georef:
        from rasterio.crs import CRS
        from rasterio.warp import transform_bounds

        vector_crs = CRS.from_user_input(crs)
        if vector_crs != ds.crs:
            left, bottom, right, top = transform_bounds(vector_crs, ds.crs, left, bottom, right, top)
        mask = ds.bounds
        where = f"{ds.crs.to_string()} ({mask.left:.6g}, {mask.bottom:.6g}, {mask.right:.6g}, {mask.top:.6g})"
    else:  # pixel coordinates: x = column, y = row
        mask = rasterio.coords.BoundingBox(0.0, 0.0, float(ds.width), float(ds.height))
        where = f"pixels (0, 0, {ds.width}, {ds.height})"
    if right < mask.left or left > mask.right or top < mask.bottom or bottom > mask.top:
        raise UsageError(f"--vector {path!r} lies at ({left:.6g}, {bottom:.6g}, {right:.6g}, {top:.6g}), which does "
                         f"not meet the mask's extent in {where}: these are polygons of another place; give "
                         "the polygons of this mask")


def _polygons(path: str, ds, scale: float) -> tuple[dict, int]:
    """The polygons as GeoJSON in display coordinates (x = column, y = -row), simplified, the largest first.

    At most :data:`MAX_POLYGONS` are read into memory (by their ``area`` field); the number left out is returned.

    Raises
    ------
    UsageError
        The polygons cannot be of the mask (:func:`_check_place`).
    """
    import pyogrio
    import shapely

    try:
        info = pyogrio.read_info(path, force_total_bounds=True)
    except pyogrio.errors.DataSourceError as exc:
        raise SceneReadError(f"cannot read --vector {path!r}: {exc}") from None
    crs = info.get("crs")
    _check_place(path, crs, info.get("total_bounds"), ds)
    count = int(info.get("features") or 0)
    fids = _largest(path, count) if "area" in list(info.get("fields", [])) else None
    meta, _, geoms, fields = pyogrio.raw.read(path, fids=fids) if fids is not None else pyogrio.raw.read(path)
    names = dict(zip(meta["fields"], fields))
    geoms = shapely.from_wkb(geoms)
    georef = ds.crs is not None and not ds.transform.is_identity
    if crs and georef:
        from rasterio.crs import CRS

        vector_crs = CRS.from_user_input(crs)
        if vector_crs != ds.crs:
            import pyproj

            t = pyproj.Transformer.from_crs(pyproj.CRS.from_wkt(vector_crs.to_wkt()),
                                            pyproj.CRS.from_wkt(ds.crs.to_wkt()), always_xy=True)
            geoms = shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        inv = ~ds.transform
        geoms = shapely.transform(geoms, lambda xy: np.column_stack([inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                                                                     inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f]))
    area = np.asarray(names.get("area", shapely.area(geoms)), np.float64)
    order = np.argsort(-np.nan_to_num(area, nan=-np.inf), kind="stable")[:MAX_POLYGONS]
    dropped = max(0, max(count, len(geoms)) - len(order))
    shown = shapely.simplify(geoms[order], scale, preserve_topology=True)  # one display pixel
    shown = shapely.transform(shown, lambda xy: np.round(np.column_stack([xy[:, 0], -xy[:, 1]]), 1))
    keep = [k for k in ("class", "area", "mean_probability", "pixels") if k in names]
    features = []
    for j, i in enumerate(order):
        props = {k: (None if isinstance(names[k][i], float) and not np.isfinite(names[k][i]) else
                     (names[k][i].item() if hasattr(names[k][i], "item") else names[k][i])) for k in keep}
        features.append({"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(shown[j]))})
    return {"type": "FeatureCollection", "features": features}, dropped


def _g(value) -> str:
    """A number or a range of numbers at 4 significant digits (the report keeps full precision)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_g(v) for v in value) + "]"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _report_sections(report: dict) -> list[dict]:
    """The run report's parts a reader looks for, as titled key-value lists."""
    sections = []
    domain = report.get("domain")
    if domain:
        rows = [("verdict", "ok" if domain.get("ok") else "REFUSED")] + [("warning", w) for w in domain.get(
            "warnings", [])] + [(c["name"], f"scene {c.get('scene_dtype')} {_g(c.get('scene_range'))}, model "
                                           f"{c.get('model_dtype')} {_g(c.get('model_range'))}") for c in
                                domain.get("channels", [])]
        sections.append({"title": "Input domain", "rows": rows})
    scene = report.get("scene") or {}
    if scene:
        rows = [(k, _g(scene[k])) for k in ("path", "width", "height", "crs", "pixel_size_m") if k in scene]
        mapping = scene.get("band_mapping")
        if isinstance(mapping, dict):  # readable words, not the report's JSON
            text = f"bands {', '.join(map(str, mapping.get('indexes', [])))} ({mapping.get('method')})"
            if mapping.get("index_channels"):
                text += f"; index channels {', '.join(mapping['index_channels'])}"
            rows.append(("band mapping", text))
        elif mapping:
            rows.append(("band mapping", str(mapping)))
        sections.append({"title": "Scene", "rows": rows})
    reg = report.get("registration")
    if reg and reg.get("groups"):
        rows = [(g, f"{v.get('status')}, shift {_g(v.get('shift_m'))} m, {v.get('model')}")
                for g, v in reg["groups"].items()]
        sections.append({"title": "Registration", "rows": rows})
    grid = report.get("grid")
    if grid:
        sections.append({"title": "Patch grid", "rows": list(grid.items()) + list((report.get("patches") or {})
                                                                                  .items())})
    if report.get("seconds"):
        sections.append({"title": "Seconds per stage", "rows": [(k, _g(v)) for k, v in report["seconds"].items()]})
    model = report.get("model")
    if model:
        sections.append({"title": "Model", "rows": [(k, model[k]) for k in ("path", "channels", "classes",
                                                                            "runtime") if k in model]})
    return [{"title": s["title"], "rows": [[str(k), v if isinstance(v, str) else json.dumps(v)]
                                             for k, v in s["rows"]]} for s in sections]


def build_page(mask: Union[str, os.PathLike], *, scene: Union[None, str, os.PathLike] = None,
               vector: Union[None, str, os.PathLike] = None, report: Union[None, str, os.PathLike, dict] = None,
               title: Optional[str] = None) -> str:
    """The HTML of the quick-look page (see the module docstring).

    Parameters
    ----------
    mask : path-like
        A class-map GeoTIFF (``tiler run``'s, or any 8-bit label raster).
    scene : path-like, optional
        The scene shown under the classes: a raster on the mask's grid, or a manifest, sensor folder or STAC
        item one of whose band groups has the mask's grid (its red, green and blue bands are shown).
    vector : path-like, optional
        Polygons of the mask (``--vector``), in its CRS, WGS 84 (GeoJSON) or pixels.
    report : path-like or dict, optional
        The run report (``--report``).
    title : str, optional

    Returns
    -------
    str
        One self-contained HTML document.

    Raises
    ------
    SceneReadError
        An input cannot be read.
    UsageError
        The scene is not on the mask's grid, or polygons cannot be placed on it.
    """
    mask = os.fspath(mask)
    with _open(mask, "mask") as ds:
        if ds.count != 1:
            raise UsageError(f"{mask!r} has {ds.count} bands; `tiler view` shows a class map (one band)")
        height, width = ds.height, ds.width
        shape = _display_shape(height, width)
        names, colours = _classes(ds)
        layers = _class_layers(ds, names, colours, shape)
        legend = _legend(ds, names, colours)
        polygons, dropped = (_polygons(os.fspath(vector), ds, max(height, width) / max(shape))
                             if vector is not None else (None, 0))
    quicklook = None
    if scene is not None and _is_raster(os.fspath(scene)):
        with _open(os.fspath(scene), "scene") as s:
            if (s.width, s.height) != (width, height):
                raise UsageError(f"--scene {os.fspath(scene)!r} is {s.width}x{s.height}, the mask {width}x{height}: "
                                 "give the scene the mask was made from (on its reference grid)")
        quicklook = _raster_quicklook(os.fspath(scene), shape)
    elif scene is not None:
        quicklook = _scene_quicklook(os.fspath(scene), height, width, shape)
    if isinstance(report, (str, os.PathLike)):
        with open(report, encoding="utf-8") as f:
            report = json.load(f)
    data = {"width": width, "height": height, "scene": quicklook, "layers": layers, "legend": legend,
            "polygons": polygons, "dropped": dropped, "report": _report_sections(report) if report else [],
            "title": title or os.path.basename(mask)}
    with open(os.path.join(_ASSETS, "leaflet.js"), encoding="utf-8") as f:
        leaflet_js = f.read()
    with open(os.path.join(_ASSETS, "leaflet.css"), encoding="utf-8") as f:
        leaflet_css = re.sub(r"url\([^)]*\)", "none", f.read())  # the controls' icons: not used, not fetched
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _TEMPLATE.format(title=html.escape(data["title"]), leaflet_css=leaflet_css, leaflet_js=leaflet_js,
                            data=payload)


def page_scene(scene, mask) -> Optional[str]:
    """The scene to show under a run's mask, or None where it cannot be shown.

    A single raster is shown where it is on the mask's grid; a manifest, sensor folder or STAC item where one of
    its band groups has the mask's size (its red, green and blue bands resampled onto that grid).
    """
    path = os.fspath(scene)
    try:
        with _open(os.fspath(mask), "mask") as m:
            height, width = m.height, m.width
        if _is_raster(path):
            with _open(path, "scene") as s:
                return path if (s.width, s.height) == (width, height) else None
        with _open_on_grid(path, height, width):
            return path
    except (SceneReadError, UsageError):
        return None


def write_page(out, html_text: str, *, overwrite: bool = False) -> str:
    """Write the page through a guarded destination; return its path."""

    dest = Destination.coerce(out, overwrite=overwrite)
    dest.write_text(html_text)
    return dest.location


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tiler: {title}</title>
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<style>{leaflet_css}</style>
<style>
html, body {{ margin: 0; height: 100%; font: 13px/1.4 system-ui, sans-serif; }}
#map {{ position: absolute; left: 0; top: 0; bottom: 0; right: 340px; background: #222; }}
#panel {{ position: absolute; right: 0; top: 0; bottom: 0; width: 340px; overflow: auto; padding: 10px;
          box-sizing: border-box; background: #fafafa; border-left: 1px solid #ccc; }}
#panel h1 {{ font-size: 15px; margin: 0 0 8px; }} #panel h2 {{ font-size: 13px; margin: 12px 0 4px; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 1px solid #555; vertical-align: middle; }}
table {{ border-collapse: collapse; width: 100%; }} td {{ padding: 1px 4px; vertical-align: top; }}
td.n {{ text-align: right; white-space: nowrap; }} .small {{ color: #666; font-size: 11px; }}
</style></head>
<body><div id="map"></div><div id="panel"><h1 id="title"></h1>
<label>class opacity <input id="opacity" type="range" min="0" max="1" step="0.05" value="0.6"></label>
<h2>Classes</h2><table id="legend"></table><div id="polys" class="small"></div><div id="report"></div></div>
<script>{leaflet_js}</script>
<script>
"use strict";
const DATA = {data};
document.getElementById("title").textContent = DATA.title;
const map = L.map("map", {{crs: L.CRS.Simple, minZoom: -6, maxZoom: 6, zoomSnap: 0.25, attributionControl: false}});
const bounds = [[-DATA.height, 0], [0, DATA.width]];
if (DATA.scene) L.imageOverlay(DATA.scene, bounds, {{className: "tiler-scene"}}).addTo(map);
const classLayers = {{}};
let opacity = 0.6;
for (const l of DATA.layers) {{
  classLayers[l.index] = L.imageOverlay(l.image, bounds, {{opacity: opacity, className: "tiler-class"}});
  if (l.shown) classLayers[l.index].addTo(map);
}}
document.getElementById("opacity").addEventListener("input", e => {{
  opacity = Number(e.target.value);
  for (const k in classLayers) classLayers[k].setOpacity(opacity);
}});
const fmt = (v, unit) => unit === "m²" ? (v >= 1e6 ? (v / 1e6).toFixed(2) + " km²" : Math.round(v) + " m²")
                                       : Math.round(v) + " px";
const legend = document.getElementById("legend");
for (const c of DATA.legend) {{
  const row = legend.insertRow();
  const has = c.pixels > 0 && DATA.layers.some(l => l.class === c.class);
  const shown = DATA.layers.some(l => l.class === c.class && l.shown);
  row.innerHTML = `<td><input type="checkbox" ${{has ? (shown ? "checked" : "") : "disabled"}}></td>` +
    `<td><span class="swatch" style="background:${{c.colour}}"></span> ${{c.class}}</td>` +
    `<td class="n">${{fmt(c.area, c.unit)}}</td><td class="n">${{(100 * c.share).toFixed(1)}} %</td>`;
  const layer = DATA.layers.find(l => l.class === c.class);
  if (layer) row.querySelector("input").addEventListener("change", e => {{
    if (e.target.checked) classLayers[layer.index].addTo(map); else map.removeLayer(classLayers[layer.index]);
  }});
}}
if (DATA.polygons) {{
  const colours = Object.fromEntries(DATA.legend.map(c => [c.class, c.colour]));
  const layer = L.geoJSON(DATA.polygons, {{
    style: f => ({{color: colours[f.properties.class] || "#000", weight: 1.5, fillOpacity: 0.05}}),
    onEachFeature: (f, l) => {{
      const p = f.properties;
      const mp = (p.mean_probability === null || p.mean_probability === undefined) ? "-" :
        p.mean_probability.toFixed(3);
      l.bindTooltip(`${{p.class}}<br>area ${{p.area === undefined ? "-" : p.area.toFixed(1)}}` +
        `<br>mean probability ${{mp}}<br>pixels ${{p.pixels === undefined ? "-" : p.pixels}}`);
    }}
  }}).addTo(map);
  document.getElementById("polys").textContent = `${{DATA.polygons.features.length}} polygons shown` +
    (DATA.dropped ? ` (the largest; ${{DATA.dropped}} smaller ones left out)` : "");
}}
const report = document.getElementById("report");
for (const s of DATA.report) {{
  const h = document.createElement("h2"); h.textContent = s.title; report.appendChild(h);
  const t = document.createElement("table");
  for (const [k, v] of s.rows) {{ const r = t.insertRow(); r.insertCell().textContent = k;
    r.insertCell().textContent = v; }}
  report.appendChild(t);
}}
map.fitBounds(bounds);
document.body.dataset.ready = "1";
</script></body></html>
"""
