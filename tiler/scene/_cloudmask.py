"""A product's own cloud mask: Landsat QA_PIXEL/BQA, Sentinel-2 SCL, MSK_CLDPRB and QA60."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # NumPy loads where a mask is read: scene paths are checked without it
    import numpy as np

__all__ = ["CloudMask", "CLOUD_MASK_KINDS", "find_landsat_mask", "find_sentinel2_mask"]

#: Sentinel-2 MSK_CLDPRB cloud probability (percent) from which a pixel is
#: cloud: Sen2Cor's "medium probability" class starts at 35 %, "high" at 65 %;
#: 50 % splits the medium class (Sen2Cor Software Release Note / L2A PSD).
CLDPRB_CLOUD_PERCENT = 50


def _bits(raw: np.ndarray, first: int, count: int = 1) -> np.ndarray:
    import numpy as np

    return (raw.astype(np.uint32) >> first) & ((1 << count) - 1)


def _landsat_qa_pixel(raw):
    # Landsat Collection 2 QA_PIXEL: bit 1 dilated cloud, bit 2 cirrus, bit 3 cloud
    # (USGS, Landsat 8-9 OLI/TIRS Collection 2 Level 1 Data Format Control Book, LSDS-1822, table 6-19).
    return (_bits(raw, 1) | _bits(raw, 2) | _bits(raw, 3)).astype(bool)


def _landsat_bqa_c1(raw):
    # Landsat Collection 1 BQA: bit 4 cloud; bits 5-6 cloud confidence and 11-12 cirrus
    # confidence, 2 = medium, 3 = high (USGS, Landsat 8 Collection 1 Level 1 Product DFCB,
    # LSDS-1656, table 6-3). Medium counts: a cloud's edge still moves with its parallax.
    return _bits(raw, 4).astype(bool) | (_bits(raw, 5, 2) >= 2) | (_bits(raw, 11, 2) == 3)


def _landsat_bqa_pre(raw):
    # Pre-collection Landsat 8 BQA: bits 14-15 cloud confidence, bits 12-13 cirrus
    # confidence, 2 = "maybe" (36-64 %), 3 = "yes" (65-100 %) (USGS, Landsat 8 Data Users
    # Handbook v1.0, 2015, table 3-3). "Maybe" counts for clouds, as for Collection 1.
    return (_bits(raw, 14, 2) >= 2) | (_bits(raw, 12, 2) == 3)


def _s2_scl(raw):
    # Sen2Cor scene classification: 8 cloud medium probability, 9 cloud high
    # probability, 10 thin cirrus (ESA, Sentinel-2 L2A Product Specification, table "SCL").
    import numpy as np

    return np.isin(raw, (8, 9, 10))


def _s2_cldprb(raw):
    return raw >= CLDPRB_CLOUD_PERCENT


def _s2_qa60(raw):
    # Sentinel-2 L1C QA60: bit 10 opaque clouds, bit 11 cirrus (ESA, S2 Products Specification Document).
    return (_bits(raw, 10) | _bits(raw, 11)).astype(bool)


#: Mask kinds: how a raw value becomes "cloud".
CLOUD_MASK_KINDS = {
    "landsat_qa_pixel": _landsat_qa_pixel,
    "landsat_bqa_c1": _landsat_bqa_c1,
    "landsat_bqa_pre": _landsat_bqa_pre,
    "s2_scl": _s2_scl,
    "s2_cldprb": _s2_cldprb,
    "s2_qa60": _s2_qa60,
}


@dataclass(frozen=True)
class CloudMask:
    """A product's cloud mask raster.

    Attributes
    ----------
    path : str
        Single-band raster on the product's grid (any resolution).
    kind : str
        One of :data:`CLOUD_MASK_KINDS`.
    """

    path: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in CLOUD_MASK_KINDS:
            raise ValueError(f"cloud mask kind {self.kind!r} is not one of {', '.join(CLOUD_MASK_KINDS)}")

    def cloudy(self, raw: np.ndarray) -> np.ndarray:
        """Cloud pixels of raw mask values; same shape, bool."""
        import numpy as np

        return CLOUD_MASK_KINDS[self.kind](np.asarray(raw))


def find_landsat_mask(files: list[str], meta: dict[str, str]) -> Optional[CloudMask]:
    """The QA band of a Landsat-8/9 folder: ``*_QA_PIXEL.TIF`` (Collection 2) or ``*_BQA.TIF``.

    ``*_BQA.TIF`` is read as Collection 1 when the MTL file gives a
    ``COLLECTION_NUMBER``, else as the pre-collection layout.
    """
    for path in files:
        base = os.path.basename(path).upper()
        if base.endswith(("_QA_PIXEL.TIF", "_QA_PIXEL.TIFF")):
            return CloudMask(path, "landsat_qa_pixel")
    for path in files:
        if os.path.basename(path).upper().endswith(("_BQA.TIF", "_BQA.TIFF")):
            return CloudMask(path, "landsat_bqa_c1" if meta.get("COLLECTION_NUMBER") else "landsat_bqa_pre")
    return None


_S2_MASKS = ((re.compile(r"MSK_CLDPRB(_20m)?\.(jp2|tiff?)$", re.I), "s2_cldprb"),
             (re.compile(r"(^|[_.-])SCL(_20m)?\.(jp2|tiff?)$", re.I), "s2_scl"),
             (re.compile(r"(^|[_.-])QA60\.(jp2|tiff?)$", re.I), "s2_qa60"))


def find_sentinel2_mask(files: list[str]) -> Optional[CloudMask]:
    """A Sentinel-2 cloud mask in the folder: ``MSK_CLDPRB_20m``, else ``SCL_20m``, else ``QA60``."""
    for pattern, kind in _S2_MASKS:
        for path in files:
            if pattern.search(os.path.basename(path)):
                return CloudMask(path, kind)
    return None
