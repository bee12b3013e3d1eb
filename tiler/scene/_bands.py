"""Bands, band groups and the spectral ranges used to match them.

A band group is a set of bands that share one pixel grid: one multi-band file
(WorldView-3 ``M``), or several single-band files on the same grid (the
Sentinel-2 10 m bands). Each band carries a common name (``red``, ``nir``,
``swir1`` ...), its radiometric scale and offset, and where known its spectral
range, which registration uses to pick the bands it compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["Band", "BandGroup", "SPECTRAL_RANGES", "RESAMPLING_UP", "RESAMPLING_DOWN"]

#: Spectral range (low, high) in nm per common band name, used when a scene
#: description does not give one. Visible to SWIR edges follow the Sentinel-2
#: MSI bands (ESA, Sentinel-2 User Handbook, rev. 2, 2015, table 3 (S2A)) where
#: Sentinel-2 has the band; ``yellow`` and ``pan`` follow the WorldView-3 spec
#: sheet (DigitalGlobe, WorldView-3 data sheet, 2014); ``tir1``/``tir2`` the
#: Landsat-8 TIRS bands (USGS, Landsat 8 Data Users Handbook v5.0, table 1-1).
SPECTRAL_RANGES: dict[str, tuple[float, float]] = {
    "coastal": (433.0, 453.0),
    "blue": (459.0, 525.0),
    "green": (542.0, 578.0),
    "yellow": (585.0, 625.0),
    "red": (649.0, 680.0),
    "rededge": (697.0, 712.0),
    "rededge1": (697.0, 712.0),
    "rededge2": (733.0, 748.0),
    "rededge3": (773.0, 793.0),
    "nir": (780.0, 886.0),
    "nir2": (854.0, 875.0),
    "watervapour": (935.0, 955.0),
    "cirrus": (1360.0, 1390.0),
    "swir1": (1565.0, 1660.0),
    "swir2": (2100.0, 2280.0),
    "pan": (450.0, 800.0),
    "tir1": (10600.0, 11190.0),
    "tir2": (11500.0, 12510.0),
}

#: Resampling methods accepted when a group is upsampled onto a finer
#: reference grid (rasterio.enums.Resampling names).
RESAMPLING_UP = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos")
#: Resampling methods accepted when a group is downsampled onto a coarser grid.
RESAMPLING_DOWN = ("average", "nearest", "mode", "bilinear", "cubic", "rms")


@dataclass(frozen=True, slots=True)
class Band:
    """One band of a band group.

    Attributes
    ----------
    name : str or None
        Common band name, lower case (``blue``, ``nir``, ``swir1``, ``pan`` ...);
        None for an unnamed band of a plain raster.
    path : str
        The file holding the band.
    index : int
        1-based band index in that file.
    scale, offset : float
        Radiometric scaling applied on read: ``value = dn * scale + offset``
        (e.g. Sentinel-2 L1C: scale 1e-4 to top-of-atmosphere reflectance).
    spectral_range : tuple of float or None
        ``(low, high)`` wavelength in nm; None when unknown.
    aliases : tuple of str
        Other common names the band answers to (``rededge`` for ``rededge1``;
        ``swir1`` for WorldView-3's SWIR-3).
    saturation : float or None
        Digital number of a saturated pixel (e.g. 65535 for Sentinel-2 and
        Landsat-8/9); spectral indices are nodata where an input saturates.
    """

    name: Optional[str]
    path: str
    index: int = 1
    scale: float = 1.0
    offset: float = 0.0
    spectral_range: Optional[tuple[float, float]] = None
    aliases: tuple[str, ...] = ()
    saturation: Optional[float] = None

    def __post_init__(self) -> None:
        if self.index < 1:
            raise ValueError(f"band index must be >= 1 (1-based), got {self.index}")
        if self.spectral_range is None and self.name in SPECTRAL_RANGES:
            object.__setattr__(self, "spectral_range", SPECTRAL_RANGES[self.name])

    @property
    def centre(self) -> Optional[float]:
        """Central wavelength in nm, or None when unknown."""
        if self.spectral_range is None:
            return None
        return 0.5 * (self.spectral_range[0] + self.spectral_range[1])


@dataclass(frozen=True, slots=True)
class BandGroup:
    """Bands on one pixel grid, read and registered together.

    Attributes
    ----------
    name : str
        Group name (``10m``, ``pan``, ``M`` ...).
    bands : tuple of Band
        In the order they appear in the scene's band list.
    resampling : str
        Method when the group is upsampled onto a finer grid (default
        ``bilinear``); one of :data:`RESAMPLING_UP`.
    downsampling : str
        Method when the group is downsampled onto a coarser grid (default
        ``average``, area-weighted); one of :data:`RESAMPLING_DOWN`.
    nodata : float or None
        Nodata value of the group's files; None: what the files declare.
    register : bool
        Estimate a registration correction for this group (default True).
    anchor : str or None
        Register against this group instead of the automatic choice.
    """

    name: str
    bands: tuple[Band, ...]
    resampling: str = "bilinear"
    downsampling: str = "average"
    nodata: Optional[float] = None
    register: bool = True
    anchor: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.bands:
            raise ValueError(f"band group {self.name!r} has no bands")
        if self.resampling not in RESAMPLING_UP:
            raise ValueError(
                f"band group {self.name!r}: resampling {self.resampling!r} is not one of "
                f"{', '.join(RESAMPLING_UP)}"
            )
        if self.downsampling not in RESAMPLING_DOWN:
            raise ValueError(
                f"band group {self.name!r}: downsampling {self.downsampling!r} is not one of "
                f"{', '.join(RESAMPLING_DOWN)}"
            )

    @property
    def paths(self) -> tuple[str, ...]:
        """The group's files, each once, in band order."""
        return tuple(dict.fromkeys(b.path for b in self.bands))
