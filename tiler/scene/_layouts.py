"""Recognised folder layouts: Sentinel-2, Landsat-8/9 and WorldView-3 band files.

Each layout turns a folder of band files into band groups with the sensor's
standard band names, spectral ranges and radiometric scaling.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

from tiler.errors import SceneReadError
from tiler.scene._bands import Band, BandGroup
from tiler.scene._cloudmask import CloudMask, find_landsat_mask, find_sentinel2_mask

__all__ = ["Layout", "detect_layout", "SENTINEL2_BANDS", "LANDSAT_BANDS", "WORLDVIEW3_BANDS",
           "WORLDVIEW3_ALIASES", "SATURATION_DN"]

#: Sentinel-2 MSI: band id -> (name, resolution in m, (low, high) nm).
#: Source: ESA, Sentinel-2 User Handbook (2015), table 3 (S2A central
#: wavelength +- half bandwidth).
SENTINEL2_BANDS: dict[str, tuple[str, int, tuple[float, float]]] = {
    "B01": ("coastal", 60, (432.0, 453.0)),
    "B02": ("blue", 10, (459.0, 525.0)),
    "B03": ("green", 10, (542.0, 578.0)),
    "B04": ("red", 10, (649.0, 680.0)),
    "B05": ("rededge1", 20, (697.0, 712.0)),
    "B06": ("rededge2", 20, (733.0, 748.0)),
    "B07": ("rededge3", 20, (773.0, 793.0)),
    "B08": ("nir", 10, (780.0, 886.0)),
    "B8A": ("nir2", 20, (854.0, 875.0)),
    "B09": ("watervapour", 60, (935.0, 955.0)),
    "B10": ("cirrus", 60, (1360.0, 1390.0)),
    "B11": ("swir1", 20, (1565.0, 1660.0)),
    "B12": ("swir2", 20, (2100.0, 2280.0)),
}
#: Order of the band_id attribute in Sentinel-2 product metadata (0..12).
_S2_BAND_ID_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: Sentinel-2 L1C/L2A digital numbers per unit reflectance when the metadata
#: does not say (QUANTIFICATION_VALUE; ESA, S2 Products Specification Document).
S2_QUANTIFICATION = 10000.0

#: Saturated pixels of Sentinel-2 L1C/L2A (S2 Products Specification Document,
#: "SATURATED" special value) and Landsat-8/9 Level-1 (Landsat 8 Data Users
#: Handbook, section 5: 65535 in the 16-bit products).
SATURATION_DN = 65535.0

#: Landsat-8/9 OLI/TIRS: band number -> (name, resolution in m, (low, high) nm).
#: Source: USGS, Landsat 8 Data Users Handbook v5.0 (2019), table 1-1.
LANDSAT_BANDS: dict[int, tuple[str, int, tuple[float, float]]] = {
    1: ("coastal", 30, (433.0, 453.0)),
    2: ("blue", 30, (450.0, 515.0)),
    3: ("green", 30, (525.0, 600.0)),
    4: ("red", 30, (630.0, 680.0)),
    5: ("nir", 30, (845.0, 885.0)),
    6: ("swir1", 30, (1560.0, 1660.0)),
    7: ("swir2", 30, (2100.0, 2300.0)),
    8: ("pan", 15, (500.0, 680.0)),
    9: ("cirrus", 30, (1360.0, 1390.0)),
    10: ("tir1", 30, (10600.0, 11190.0)),
    11: ("tir2", 30, (11500.0, 12510.0)),
}

#: WorldView-3 file -> band names and (low, high) nm, in file order.
#: Source: DigitalGlobe, WorldView-3 data sheet (2014), spectral bands. The
#: SWIR bands are ``wv3_swir1`` ... ``wv3_swir8`` (the sensor's SWIR-1..8), so
#: that ``swir1``/``swir2`` keep their common meaning (about 1.6 and 2.2 um,
#: Awesome Spectral Indices S1 1550-1750 nm and S2 2080-2350 nm): SWIR-3
#: (1640-1680 nm) answers to ``swir1`` and SWIR-6 (2185-2225 nm) to ``swir2``
#: (see :data:`WORLDVIEW3_ALIASES`). NIR-2 (860-1040 nm) is broader than the
#: catalogue's N2 (850-880 nm).
WORLDVIEW3_BANDS: dict[str, tuple[tuple[str, tuple[float, float]], ...]] = {
    "P": (("pan", (450.0, 800.0)),),
    "M": (("coastal", (400.0, 450.0)), ("blue", (450.0, 510.0)), ("green", (510.0, 580.0)),
          ("yellow", (585.0, 625.0)), ("red", (630.0, 690.0)), ("rededge", (705.0, 745.0)),
          ("nir", (770.0, 895.0)), ("nir2", (860.0, 1040.0))),
    "A": (("wv3_swir1", (1195.0, 1225.0)), ("wv3_swir2", (1550.0, 1590.0)), ("wv3_swir3", (1640.0, 1680.0)),
          ("wv3_swir4", (1710.0, 1750.0)), ("wv3_swir5", (2145.0, 2185.0)), ("wv3_swir6", (2185.0, 2225.0)),
          ("wv3_swir7", (2235.0, 2285.0)), ("wv3_swir8", (2295.0, 2365.0))),
    "RGB": (("red", (630.0, 690.0)), ("green", (510.0, 580.0)), ("blue", (450.0, 510.0))),
}

#: WorldView-3 band name -> the common names it also answers to.
WORLDVIEW3_ALIASES = {"rededge": ("rededge1",), "wv3_swir3": ("swir1",), "wv3_swir6": ("swir2",)}


@dataclass(frozen=True)
class Layout:
    """A recognised scene description: its band groups and reference group.

    Attributes
    ----------
    kind : str
        ``sentinel2``, ``landsat``, ``worldview3``, ``manifest`` or ``raster``.
    groups : tuple of BandGroup
    reference : str or None
        Name of the reference group; None: the finest group.
    notes : tuple of str
        What was assumed (e.g. the radiometric scaling applied).
    cloud_mask : CloudMask or None
        The product's own cloud mask, where the folder or manifest has one.
    """

    kind: str
    groups: tuple[BandGroup, ...]
    reference: Optional[str]
    notes: tuple[str, ...] = ()
    cloud_mask: Optional[CloudMask] = None


def _files(folder: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))


_S2_RE = re.compile(r"(?:^|[_.-])(B(?:0[1-9]|1[0-2]|8A))(?:_(10|20|60)m)?\.(jp2|tif|tiff)$", re.IGNORECASE)
_S2_LOOSE_RE = re.compile(r"B(0[1-9]|1[0-2]|8A)", re.IGNORECASE)


def _sentinel2_metadata(folder: str) -> tuple[float, dict[str, float], Optional[str]]:
    """Quantification value and per-band additive offsets from MTD_MSIL1C/L2A.xml."""
    for name in ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml"):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        q = re.search(r"<(?:BOA_)?QUANTIFICATION_VALUE[^>]*>\s*([\d.]+)", text)
        quant = float(q.group(1)) if q else S2_QUANTIFICATION
        offsets = {}
        for m in re.finditer(r"<(?:RADIO|BOA)_ADD_OFFSET band_id=\"(\d+)\">\s*(-?[\d.]+)", text):
            offsets[_S2_BAND_ID_ORDER[int(m.group(1))]] = float(m.group(2))
        return quant, offsets, name
    return S2_QUANTIFICATION, {}, None


def _sentinel2(folder: str, files: list[str]) -> Optional[Layout]:
    found: dict[str, list[str]] = {}
    for path in files:
        m = _S2_RE.search(os.path.basename(path))
        if m is None and path.lower().endswith((".tif", ".tiff")):
            m2 = _S2_LOOSE_RE.search(os.path.basename(path))
            band = "B" + m2.group(1).upper() if m2 else None
        else:
            band = m.group(1).upper() if m else None
        if band in SENTINEL2_BANDS:
            found.setdefault(band, []).append(path)
    # Zero-padded 10 m band ids tell Sentinel-2 from Landsat (B2, B10, B11).
    if len(found) < 2 or not {"B02", "B03", "B04", "B08"} & found.keys():
        return None
    quant, offsets, meta = _sentinel2_metadata(folder)
    groups: dict[int, list[Band]] = {}
    for band_id in _S2_BAND_ID_ORDER:
        if band_id not in found:
            continue
        name, res, rng = SENTINEL2_BANDS[band_id]
        paths = found[band_id]
        # L2A folders hold a band at several resolutions: take its native one.
        native = [p for p in paths if f"_{res}m" in os.path.basename(p)]
        path = (native or sorted(paths, key=len))[0]
        groups.setdefault(res, []).append(
            Band(name, path, 1, scale=1.0 / quant, offset=offsets.get(band_id, 0.0) / quant, spectral_range=rng,
                 aliases=("rededge",) if name == "rededge1" else (), saturation=SATURATION_DN))
    notes = [f"Sentinel-2: reflectance = (DN + offset) / {quant:g}"]
    if meta is None:
        notes.append("no MTD_MSIL1C.xml/MTD_MSIL2A.xml found: assumed no radiometric offset "
                     "(processing baseline before 04.00); add the metadata file if it is 04.00 or later")
    else:
        notes.append(f"offsets from {meta}: {offsets or 'none'}")
    # Sentinel-2 L1C/L2A use 0 as the no-data value (S2 Products Specification Document).
    out = tuple(BandGroup(f"{res}m", tuple(bands), nodata=0.0) for res, bands in sorted(groups.items()))
    mask = find_sentinel2_mask(files)
    if mask is not None:
        notes.append(f"cloud mask: {os.path.basename(mask.path)} ({mask.kind})")
    return Layout("sentinel2", out, None, tuple(notes), mask)


_L8_RE = re.compile(r"(?:^|_)(?:SR_|ST_)?B(\d{1,2})\.tiff?$", re.IGNORECASE)


def _parse_mtl(path: str) -> dict[str, str]:
    values = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if "=" in line:
                key, _, value = line.partition("=")
                values.setdefault(key.strip(), value.strip().strip('"'))
    return values


def _landsat(folder: str, files: list[str]) -> Optional[Layout]:
    found = {}
    for path in files:
        m = _L8_RE.search(os.path.basename(path))
        if m and int(m.group(1)) in LANDSAT_BANDS:
            found[int(m.group(1))] = path
    if len(found) < 2:
        return None
    mtl = [p for p in files if p.upper().endswith("_MTL.TXT")]
    meta = _parse_mtl(mtl[0]) if mtl else {}
    notes = []
    groups: dict[int, list[Band]] = {}
    unscaled = []
    for number in sorted(found):
        name, res, rng = LANDSAT_BANDS[number]
        kind = "RADIANCE" if number >= 10 else "REFLECTANCE"
        mult, add = meta.get(f"{kind}_MULT_BAND_{number}"), meta.get(f"{kind}_ADD_BAND_{number}")
        if mult is None or add is None:
            unscaled.append(f"B{number}")
            scale, offset = 1.0, 0.0
        else:
            scale, offset = float(mult), float(add)
        groups.setdefault(res, []).append(Band(name, found[number], 1, scale=scale, offset=offset, spectral_range=rng,
                                               saturation=SATURATION_DN))
    if mtl:
        notes.append(f"Landsat: TOA reflectance (B1-B9) and radiance (B10, B11) from {os.path.basename(mtl[0])} "
                     "REFLECTANCE_/RADIANCE_MULT and _ADD")
    if unscaled:
        notes.append(f"no MTL scaling for {', '.join(unscaled)}: raw digital numbers")
    names = {15: "pan", 30: "ms"}
    # Landsat Level-1 products use 0 as fill (Landsat 8 Data Users Handbook, section 5).
    out = tuple(BandGroup(names[res], tuple(bands), nodata=0.0) for res, bands in sorted(groups.items()))
    mask = find_landsat_mask(files, meta)
    if mask is not None:
        notes.append(f"cloud mask: {os.path.basename(mask.path)} ({mask.kind})")
    return Layout("landsat", out, None, tuple(notes), mask)


_WV3_RE = re.compile(r"^(?P<id>.+?)(?:_(?P<kind>[PMA]))?\.tiff?$", re.IGNORECASE)


def _worldview3(folder: str, files: list[str]) -> Optional[Layout]:
    candidates = list(files)
    for sub in ("sixteen_band", "three_band"):
        if os.path.isdir(os.path.join(folder, sub)):
            candidates += _files(os.path.join(folder, sub))
    by_id: dict[str, dict[str, str]] = {}
    for path in candidates:
        m = _WV3_RE.match(os.path.basename(path))
        if m:
            kind = (m.group("kind") or "RGB").upper()
            by_id.setdefault(m.group("id"), {})[kind] = path
    ids = [i for i, kinds in by_id.items() if {"P", "M"} & kinds.keys() and len({"P", "M", "A"} & kinds.keys()) >= 1
           and len(kinds) >= 2]
    if not ids:
        return None
    if len(ids) > 1:
        raise SceneReadError(
            f"folder {folder!r} holds several WorldView-3 scenes ({', '.join(sorted(ids))}); pass one "
            "scene manifest (TOML) per scene, or a folder with one <id>_P/_M/_A.tif set"
        )
    kinds = by_id[ids[0]]
    groups = []
    for kind in ("P", "M", "A", "RGB"):
        if kind in kinds:
            bands = tuple(Band(name, kinds[kind], i, spectral_range=rng, aliases=WORLDVIEW3_ALIASES.get(name, ()))
                          for i, (name, rng) in enumerate(WORLDVIEW3_BANDS[kind], start=1))
            groups.append(BandGroup(kind, bands))
    notes = ("WorldView-3: raw digital numbers (no gains given); index channels such as EVI and "
             "SAVI need reflectance: describe the scene with a manifest giving scale/offset",)
    return Layout("worldview3", tuple(groups), None, notes)


def detect_layout(folder: str) -> Layout:
    """Recognise a folder of band files.

    Parameters
    ----------
    folder : str
        Sentinel-2 band files (``*_B02.jp2``, ``*_B02_10m.jp2``, ``*B02*.tif`` ...),
        Landsat-8/9 band files (``*_B1.TIF`` ... with the ``*_MTL.txt`` file),
        or the WorldView-3 P/M/A convention (``<id>_P.tif``, ``<id>_M.tif``,
        ``<id>_A.tif``, optional ``<id>.tif`` RGB; also in ``sixteen_band/``
        and ``three_band/`` sub-folders as in the Dstl data).

    Returns
    -------
    Layout

    Raises
    ------
    SceneReadError
        If the folder matches none of the layouts, or holds several scenes.

    Notes
    -----
    Band names, spectral ranges and scaling per sensor are in
    :data:`SENTINEL2_BANDS`, :data:`LANDSAT_BANDS` and :data:`WORLDVIEW3_BANDS`.
    Sentinel-2 reflectance is ``(DN + offset) / QUANTIFICATION_VALUE``, the
    offset (-1000 from processing baseline 04.00) read from the product
    metadata when it is in the folder; Landsat uses the MTL file's
    ``REFLECTANCE_MULT_BAND_n`` / ``REFLECTANCE_ADD_BAND_n``.
    """
    files = _files(folder)
    for recognise in (_sentinel2, _landsat, _worldview3):
        layout = recognise(folder, files)
        if layout is not None:
            return layout
    shown = ", ".join(os.path.basename(p) for p in files[:8]) or "no files"
    raise SceneReadError(
        f"folder {folder!r} is not a recognised scene layout (found: {shown}); expected Sentinel-2 "
        "(*_B02.jp2 ...), Landsat-8/9 (*_B1.TIF ... with *_MTL.txt) or WorldView-3 (<id>_P.tif, "
        "<id>_M.tif, <id>_A.tif) band files, or pass a scene manifest (.toml)"
    )
