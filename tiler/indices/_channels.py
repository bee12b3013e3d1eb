"""Building a model's input channels, bands and spectral indices, from a scene."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from tiler.errors import BandMismatchError
from tiler.indices._formulas import INDICES, compute_index

__all__ = ["ChannelPlan"]


@dataclass(frozen=True)
class _Step:
    """One output channel: a band read (``index`` None) or an index of read bands."""

    name: str
    inputs: tuple[int, ...]  # positions in the read band stack
    index: Optional[str] = None
    saturation: tuple[float, ...] = ()  # per input: scaled saturation value, or inf


@dataclass(frozen=True)
class ChannelPlan:
    """Which scene bands to read, and how to turn them into the model's channels.

    Attributes
    ----------
    channels : tuple of str
        The channel names, in order: band names and index names (:data:`INDICES`).
    indexes : tuple of int
        1-based scene bands to read, each once, in read order.
    method : {"names", "position", "explicit"}
        How band channels were found (see :meth:`tiler.scene.Scene.map_channels`).
    """

    channels: tuple[str, ...]
    indexes: tuple[int, ...]
    method: str
    _steps: tuple[_Step, ...]

    @property
    def index_channels(self) -> tuple[str, ...]:
        """The channels that are computed indices."""
        return tuple(s.name for s in self._steps if s.index is not None)

    @classmethod
    def for_scene(cls, scene, channels: Sequence[str], *, bands: Optional[Sequence[int]] = None) -> "ChannelPlan":
        """Resolve channel names against a scene's band names.

        Parameters
        ----------
        scene : tiler.scene.Scene
        channels : sequence of str
            Band names (``red``, ``nir``; aliases such as ``rededge`` for
            ``rededge1`` count) and index names (``ndwi``, ``evi`` ...).
        bands : sequence of int, optional
            Explicit 1-based scene bands, one per channel; only for channels
            that are all bands.

        Returns
        -------
        ChannelPlan

        Raises
        ------
        BandMismatchError
            If a channel, or an input band of an index channel, is not in the
            scene; the message lists the scene's bands and the indices it can
            provide.
        """
        channels = tuple(c.lower() for c in channels)
        lookup = scene.band_lookup()
        is_index = [c in INDICES and c not in lookup for c in channels]
        if not any(is_index):
            mapping = scene.map_channels(channels, bands=bands)
            steps = tuple(_Step(c, (k,)) for k, c in enumerate(channels))
            return cls(channels, tuple(mapping.indexes), mapping.method, steps)
        if bands is not None:
            computed = ", ".join(c for c, i in zip(channels, is_index) if i)
            raise BandMismatchError(
                f"--bands maps scene bands to channels, but channel(s) {computed} are computed indices; "
                "drop --bands and name the scene's bands (a manifest or band descriptions)"
            )
        read: list[int] = []

        def position(band_index: int) -> int:
            if band_index not in read:
                read.append(band_index)
            return read.index(band_index)

        steps, missing = [], []
        for c, idx in zip(channels, is_index):
            names = INDICES[c].bands if idx else (c,)
            found = [lookup.get(n) for n in names]
            if any(f is None for f in found):
                lacking = ", ".join(n for n, f in zip(names, found) if f is None)
                missing.append(f"{c} (needs {lacking})" if idx else c)
                continue
            bands_found = [int(f) for f in found]  # type: ignore[arg-type]
            saturation = tuple(scene.saturation_value(f) for f in bands_found) if idx else ()
            steps.append(_Step(c, tuple(position(f) for f in bands_found), c if idx else None, saturation))
        if missing:
            raise BandMismatchError(
                f"{scene.path!r} cannot provide channel(s) {', '.join(missing)}: it has bands "
                f"{scene.describe_bands()}, from which it can compute {', '.join(cls.available(scene)) or 'no index'}"
            )
        return cls(channels, tuple(read), "names", tuple(steps))

    def unscaled_inputs(self, scene) -> dict[str, tuple[int, ...]]:
        """Per index channel, the 1-based scene bands it reads as raw integer digital numbers.

        A band counts as raw when it has no radiometric scale or offset and an
        integer dtype (:meth:`tiler.scene.Scene.value_dtype`).

        Returns
        -------
        dict of str to tuple of int
            Only index channels with at least one such band.
        """
        out = {}
        for s in self._steps:
            if s.index is None:
                continue
            raw = tuple(self.indexes[i] for i in s.inputs if np.dtype(scene.value_dtype(self.indexes[i])).kind in "ui")
            if raw:
                out[s.name] = raw
        return out

    @staticmethod
    def available(scene) -> list[str]:
        """Index names whose input bands the scene has."""
        lookup = scene.band_lookup()
        return [n for n, i in INDICES.items() if all(b in lookup for b in i.bands)]

    def describe(self, scene) -> tuple[str, ...]:
        """Per channel, how it is built: ``band 3 (red)`` or ``ndwi = (green - nir) / (green + nir) of bands 2, 4``."""
        out = []
        for s in self._steps:
            idx = [self.indexes[i] for i in s.inputs]
            if s.index is None:
                out.append(f"band {idx[0]} ({scene.band_names[idx[0] - 1] or 'unnamed'})")
            else:
                out.append(f"{INDICES[s.index].formula} of band(s) {', '.join(map(str, idx))}")
        return tuple(out)

    def dtypes(self, scene) -> tuple[str, ...]:
        """Per channel, the dtype of its values as fed (see :meth:`tiler.scene.Scene.value_dtype`).

        Index channels are ``float32``; band channels have their band's dtype.
        """
        return tuple("float32" if s.index is not None else scene.value_dtype(self.indexes[s.inputs[0]])
                     for s in self._steps)

    def build(self, data: np.ndarray, valid: np.ndarray, **params: Union[float, dict]) -> np.ndarray:
        """Channels from the bands read at :attr:`indexes`.

        Parameters
        ----------
        data : ndarray of shape (band, row, col), float32
            The scene bands at :attr:`indexes`, in reflectance.
        valid : ndarray of shape (row, col), bool
            The read's valid mask.
        **params
            Per index name, a dict of parameter overrides (``savi={"L": 1.0}``).

        Returns
        -------
        ndarray of shape (channel, row, col), float32
            Index channels are NaN where undefined (nodata or saturated input,
            near-zero denominator); band channels are as read.
        """
        identity = [s.inputs[0] for s in self._steps] == list(range(len(self._steps)))
        if identity and all(s.index is None for s in self._steps):
            return data
        out = np.empty((len(self._steps),) + data.shape[1:], np.float32)
        for k, s in enumerate(self._steps):
            if s.index is None:
                out[k] = data[s.inputs[0]]
                continue
            ok = valid.copy()
            for pos, sat in zip(s.inputs, s.saturation):
                if np.isfinite(sat):
                    ok &= data[pos] < sat
            out[k] = compute_index(s.index, *(data[p] for p in s.inputs), valid=ok, **params.get(s.index, {}))
        return out
