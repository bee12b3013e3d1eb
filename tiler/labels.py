"""Class schemes: class names, colours, and decoding of label masks.

A class scheme is a small JSON file::

    {
      "classes": [
        {"name": "building", "colour": "#3C1098"},
        {"name": "land", "colour": "#8429F6"}
      ],
      "ignore": ["#9B9B9B", "#000000"]
    }

Class ``i`` is the ``i``-th entry. A colour-coded mask (3 bands, RGB) maps each
listed colour to its class; an integer mask (1 band) holds the class index
directly. Pixels whose colour or value is in ``ignore`` are excluded from losses
and metrics (decoded to :data:`IGNORE`). Any other colour is an error, never a
guess.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler.errors import DatasetError

__all__ = ["IGNORE", "BACKGROUND_NAMES", "LabelScheme", "parse_colour", "read_mask"]

#: Decoded label of pixels that are ignored in losses and metrics.
IGNORE = 255
#: Class names taken as the background class (not exported as polygons by
#: default; the fill of polygon labels): the DeepGlobe, ISPRS Potsdam/Vaihingen
#: and LoveDA conventions, and "clear" of cloud masks (Fmask, ukis-csmask).
BACKGROUND_NAMES = ("background", "unlabeled", "unlabelled", "clutter", "void", "clear")


def parse_colour(colour: Union[str, Sequence[int]]) -> tuple[int, int, int]:
    """Parse ``"#RRGGBB"`` or ``(r, g, b)`` into a tuple of three 0..255 ints.

    Raises
    ------
    DatasetError
        If the colour is malformed.
    """
    if isinstance(colour, str):
        text = colour.lstrip("#")
        if len(text) != 6:
            raise DatasetError(f"colour {colour!r} is not of the form '#RRGGBB'")
        try:
            return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        except ValueError:
            raise DatasetError(f"colour {colour!r} is not of the form '#RRGGBB'") from None
    values = tuple(int(v) for v in colour)
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise DatasetError(f"colour {colour!r} is not three integers in 0..255")
    return values  # type: ignore[return-value]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


@dataclass(frozen=True, slots=True)
class LabelScheme:
    """Ordered classes with display colours, and the mask values to ignore.

    Parameters
    ----------
    names : tuple of str
        Class names; class ``i`` is ``names[i]``. At most 255 classes.
    colours : tuple of str
        ``"#RRGGBB"`` colour of each class (mask colour and output colour table).
    ignore_colours : tuple of str
        Mask colours that mark unlabelled pixels.
    ignore_values : tuple of int
        Integer mask values that mark unlabelled pixels.
    values : tuple of int
        Integer mask value of each class (e.g. ``(0, 255)`` for a 0/255
        building-footprint mask); empty: class ``i`` is value ``i``.
    """

    names: tuple[str, ...]
    colours: tuple[str, ...]
    ignore_colours: tuple[str, ...] = ()
    ignore_values: tuple[int, ...] = (IGNORE,)
    values: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.names:
            raise DatasetError("a class scheme needs at least one class")
        if len(self.names) > 254:
            raise DatasetError(f"at most 254 classes fit a uint8 class map, got {len(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise DatasetError(f"class names must be unique, got {list(self.names)}")
        if len(self.colours) != len(self.names):
            raise DatasetError(
                f"{len(self.names)} class names but {len(self.colours)} colours"
            )
        rgbs = [parse_colour(c) for c in self.colours]
        if len(set(rgbs)) != len(rgbs):
            raise DatasetError(f"class colours must be unique, got {list(self.colours)}")
        clash = set(rgbs) & {parse_colour(c) for c in self.ignore_colours}
        if clash:
            raise DatasetError(f"colours {sorted(map(_hex, clash))} are both a class and ignored")
        if self.values:
            if len(self.values) != len(self.names) or len(set(self.values)) != len(self.values):
                raise DatasetError(f"give one distinct mask value per class ({len(self.names)}: "
                                   f"{', '.join(self.names)}), got {list(self.values)}")
            both = set(self.values) & set(self.ignore_values)
            if both:
                object.__setattr__(self, "ignore_values",
                                   tuple(v for v in self.ignore_values if v not in both))

    def with_values(self, values: Sequence[int]) -> "LabelScheme":
        """The same classes with explicit integer mask values (``--truth-values``)."""
        return LabelScheme(self.names, self.colours, self.ignore_colours, self.ignore_values,
                           tuple(int(v) for v in values))

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "LabelScheme":
        """Read a class scheme JSON file (format in the module docstring).

        Raises
        ------
        DatasetError
            If the file is missing or malformed.
        """
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise DatasetError(f"class file {os.fspath(path)!r} does not exist") from None
        except UnicodeDecodeError:
            raise DatasetError(f"class file {os.fspath(path)!r} is not a JSON text file (is it a model or an image?); "
                               "pass a JSON class file such as examples/dubai_classes.json") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"class file {os.fspath(path)!r} is not valid JSON ({exc}); pass a JSON class file "
                               "such as examples/dubai_classes.json") from None
        if not isinstance(doc, dict):
            raise DatasetError(f"class file {os.fspath(path)!r} holds a JSON {type(doc).__name__}, not an object "
                               "with 'classes'; see examples/dubai_classes.json")
        return cls.from_dict(doc, source=os.fspath(path))

    @classmethod
    def from_dict(cls, doc: dict, *, source: str = "class scheme") -> "LabelScheme":
        """Build a scheme from its JSON document (a dict)."""
        try:
            entries = doc["classes"]
            names = tuple(str(e["name"]) for e in entries)
            colours = tuple(_hex(parse_colour(e["colour"])) for e in entries)
        except (KeyError, TypeError) as exc:
            raise DatasetError(
                f"{source}: expected {{'classes': [{{'name': ..., 'colour': '#RRGGBB'}}, ...]}}, "
                f"missing {exc}"
            ) from None
        ignore = doc.get("ignore", [])
        ignore_colours = tuple(_hex(parse_colour(v)) for v in ignore if not isinstance(v, int))
        ignore_values = tuple(int(v) for v in ignore if isinstance(v, int)) or (IGNORE,)
        given = [e.get("value") for e in entries]
        if any(v is not None for v in given) and not all(isinstance(v, int) for v in given):
            raise DatasetError(f"{source}: give every class an integer 'value', or none")
        values = tuple(given) if all(isinstance(v, int) for v in given) else ()
        return cls(names, colours, ignore_colours, ignore_values, values)

    def to_dict(self) -> dict:
        """The scheme as its JSON document."""
        classes = [{"name": n, "colour": c} for n, c in zip(self.names, self.colours)]
        for entry, v in zip(classes, self.values):
            entry["value"] = v
        return {"classes": classes, "ignore": list(self.ignore_colours) + list(self.ignore_values)}

    def decode(self, mask: np.ndarray, *, fix: str = "add them to the class file") -> np.ndarray:
        """Turn a label mask into class indices.

        Parameters
        ----------
        mask : ndarray of shape (band, row, col)
            One band of integer class indices, or three bands (RGB uint8) of
            class colours.
        fix : str, optional
            What the error for an unknown colour tells the user to do.

        Returns
        -------
        ndarray of shape (row, col), uint8
            Class index per pixel, :data:`IGNORE` where unlabelled.

        Raises
        ------
        DatasetError
            For a band count other than 1 or 3, a colour that is neither a
            class nor ignored, or an index outside the classes.
        """
        if mask.ndim != 3 or mask.shape[0] not in (1, 3):
            raise DatasetError(
                f"a mask needs 1 band (class indices) or 3 bands (RGB colours), got shape {mask.shape}"
            )
        k = len(self.names)
        if mask.shape[0] == 1:
            values = mask[0].astype(np.int64)
            out = np.full(values.shape, IGNORE, np.uint8)
            if self.values:
                ok = np.zeros(values.shape, bool)
                for i, v in enumerate(self.values):
                    hit = values == v
                    out[hit] = i
                    ok |= hit
                what = f"class values {list(self.values)}"
            else:
                ok = (values >= 0) & (values < k)
                out[ok] = values[ok]
                what = f"class indices 0..{k - 1}"
            bad = ~ok & ~np.isin(values, self.ignore_values)
            if bad.any():
                raise DatasetError(
                    f"mask values {np.unique(values[bad])[:10].tolist()} are not {what} "
                    f"nor ignored values {list(self.ignore_values)}"
                )
            return out
        code = (mask[0].astype(np.int64) << 16) | (mask[1].astype(np.int64) << 8) | mask[2].astype(np.int64)
        lut_keys = []
        lut_vals = []
        for i, c in enumerate(self.colours):
            r, g, b = parse_colour(c)
            lut_keys.append((r << 16) | (g << 8) | b)
            lut_vals.append(i)
        for c in self.ignore_colours:
            r, g, b = parse_colour(c)
            lut_keys.append((r << 16) | (g << 8) | b)
            lut_vals.append(IGNORE)
        keys = np.asarray(lut_keys, np.int64)
        order = np.argsort(keys)
        keys, vals = keys[order], np.asarray(lut_vals, np.uint8)[order]
        pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
        found = keys[pos] == code
        if not found.all():
            unknown = np.unique(code[~found])[:10]
            raise DatasetError(
                "mask colours "
                + ", ".join(_hex(((u >> 16) & 255, (u >> 8) & 255, u & 255)) for u in unknown)
                + f" are neither a class nor ignored; {fix}"
            )
        return vals[pos]

    @property
    def background(self) -> Optional[int]:
        """Index of the background class (named as in :data:`BACKGROUND_NAMES`), or None."""
        lower = [n.lower() for n in self.names]
        return next((lower.index(n) for n in BACKGROUND_NAMES if n in lower), None)

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL colour table: class index -> (r, g, b, 255)."""
        return {i: (*parse_colour(c), 255) for i, c in enumerate(self.colours)}


def read_mask(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read a label mask, expanding a palette (colour-mapped) image to RGB.

    Parameters
    ----------
    path : path-like
        A raster rasterio can open: 1 band of class indices, 1 palette band,
        or 3 RGB bands.

    Returns
    -------
    ndarray of shape (band, row, col)
        1 band of integers, or 3 bands uint8 RGB (palette images expanded).

    Raises
    ------
    DatasetError
        If the file is missing or unreadable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                data = ds.read()
                if ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette:
                    cmap = ds.colormap(1)
                    lut = np.zeros((256, 3), np.uint8)
                    for index, rgba in cmap.items():
                        lut[index] = rgba[:3]
                    data = np.moveaxis(lut[data[0]], -1, 0)
    except RasterioIOError as exc:
        raise DatasetError(f"cannot read mask {os.fspath(path)!r}: {exc}") from None
    return data
