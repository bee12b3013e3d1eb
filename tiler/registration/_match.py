"""Choosing what to compare: band pairs between two groups, and the anchor group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tiler.scene import Band, BandGroup

__all__ = ["BandMatch", "match_bands", "BROAD_BAND_NM"]

#: A band at least this wide (nm) is compared with the mean of the other
#: group's bands inside its range (a panchromatic band against visible
#: multispectral bands) instead of with one band.
BROAD_BAND_NM = 150.0


@dataclass(frozen=True, slots=True)
class BandMatch:
    """Bands of a group and of its anchor whose images are compared.

    Attributes
    ----------
    group_positions, anchor_positions : tuple of int
        0-based bands of each group; several bands are averaged.
    gap_nm : float or None
        Distance between the two sides' mean central wavelengths; None when
        the bands' spectral ranges are unknown.
    """

    group_positions: tuple[int, ...]
    anchor_positions: tuple[int, ...]
    gap_nm: Optional[float]

    def describe(self, group: BandGroup, anchor: BandGroup) -> str:
        """E.g. ``"nir2 ~ nir"`` or ``"mean(green, red) ~ pan"``."""
        def side(g: BandGroup, pos: Sequence[int]) -> str:
            names = [g.bands[p].name or f"band {p + 1}" for p in pos]
            return names[0] if len(names) == 1 else f"mean({', '.join(names)})"
        return f"{side(group, self.group_positions)} ~ {side(anchor, self.anchor_positions)}"


def _inside(broad: Band, others: Sequence[Band]) -> list[int]:
    lo, hi = broad.spectral_range  # type: ignore[misc]
    return [k for k, b in enumerate(others) if b.centre is not None and lo <= b.centre <= hi]


def match_bands(group: BandGroup, anchor: BandGroup) -> BandMatch:
    """Pick the spectrally closest band (or band combination) of two groups.

    Parameters
    ----------
    group, anchor : BandGroup

    Returns
    -------
    BandMatch
        A broad band (at least :data:`BROAD_BAND_NM` wide, e.g. panchromatic)
        is matched with the mean of the other group's bands whose centres fall
        in its range; otherwise the pair with the smallest gap between central
        wavelengths. Bands with the same name match with gap 0. Without
        spectral ranges on either side, band 1 is compared with band 1.
    """
    names = {b.name: k for k, b in enumerate(anchor.bands) if b.name}
    for k, b in enumerate(group.bands):
        if b.name and b.name in names:
            return BandMatch((k,), (names[b.name],), 0.0)
    broad: list[BandMatch] = []
    single: list[BandMatch] = []

    def candidate(gp: list[int], ap: list[int]) -> BandMatch:
        gc = sum(group.bands[k].centre for k in gp) / len(gp)  # type: ignore[misc]
        ac = sum(anchor.bands[k].centre for k in ap) / len(ap)  # type: ignore[misc]
        return BandMatch(tuple(gp), tuple(ap), abs(gc - ac))

    def is_broad(b: Band) -> bool:
        return b.spectral_range is not None and b.spectral_range[1] - b.spectral_range[0] >= BROAD_BAND_NM

    for k, b in enumerate(group.bands):
        if b.centre is None:
            continue
        if is_broad(b) and _inside(b, anchor.bands):
            broad.append(candidate([k], _inside(b, anchor.bands)))
        single += [candidate([k], [m]) for m, a in enumerate(anchor.bands) if a.centre is not None]
    for m, a in enumerate(anchor.bands):
        if a.centre is not None and is_broad(a) and _inside(a, group.bands):
            broad.append(candidate(_inside(a, group.bands), [m]))
    # A broad band is best imitated by the mean of the bands inside it.
    pool = broad or single
    if not pool:
        return BandMatch((0,), (0,), None)
    return min(pool, key=lambda c: c.gap_nm)  # type: ignore[arg-type,return-value]
