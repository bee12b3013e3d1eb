"""The source: a scene window read and turned into a model's channels.

One object for every consumer of a scene's channels: the streaming engine of
``tiler run``, the domain check that samples a scene before a run, and
training, which reads whole images the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tiler.domain import InputScale
from tiler.indices import ChannelPlan
from tiler.plan import reflect_indices, take_runs

__all__ = ["ArraySource", "ChannelSource", "fill_channels"]


def fill_channels(data: np.ndarray, valid: Optional[np.ndarray], fill: np.ndarray, *,
                  undefined: bool = True) -> np.ndarray:
    """Apply the fill policy in place: invalid pixels and undefined values get each channel's fill value.

    Parameters
    ----------
    data : ndarray of shape (channel, row, col), float32
        Channels; modified in place.
    valid : ndarray of shape (row, col), bool, or None
        Valid-data mask; invalid pixels are set to ``fill`` (``None``: all valid).
    fill : ndarray of shape (channel,), float32
        Per-channel fill value: the model's normalisation offset (its training
        mean), so that a filled pixel is a neutral input.
    undefined : bool, default True
        Also fill NaN values (an index whose denominator is zero where its
        bands are valid); those pixels stay valid.

    Returns
    -------
    ndarray
        ``data`` itself.
    """
    values = np.asarray(fill, np.float32).reshape(-1, 1)
    if valid is not None and not valid.all():
        data[:, ~valid] = values
    if undefined:
        np.copyto(data, np.broadcast_to(values[:, :, None], data.shape), where=np.isnan(data))
    return data


class ChannelSource:
    """Reads windows of a scene's reference grid as a model's input channels.

    Parameters
    ----------
    scene : tiler.scene.Scene
        An open scene (registered, where its groups are registered).
    plan : ChannelPlan
        Which bands to read and which channels (bands and indices) to build.
    fill : ndarray of shape (channel,), optional
        Per-channel fill value (the model's normalisation offset). Given:
        nodata pixels and undefined index values are filled (for prediction).
        None: they are left as read, NaN for undefined indices (for sampling
        the domain, for training before its statistics are known).
    input_scale : InputScale, optional
        ``value * scale + offset`` per channel (``--input-scale``), applied
        before the fill.
    grid : tiler.scene.ProcessingGrid, optional
        Read this processing grid (the reference grid at the model's pixel
        size) instead of the reference grid.

    Notes
    -----
    Calling the source, ``source(rows, cols)``, is :meth:`read`; it is the
    engine's ``read`` callable (:data:`tiler.engine.ReadFunction`).
    """

    def __init__(self, scene, plan: ChannelPlan, *, fill: Optional[Sequence[float]] = None,
                 input_scale: Optional[InputScale] = None, grid=None) -> None:
        self.scene, self.plan = scene, plan
        self.grid = grid if grid is not None and grid.resampled else None
        self.fill = None if fill is None else np.asarray(fill, np.float32)
        if self.fill is not None and self.fill.shape != (len(plan.channels),):
            raise ValueError(f"fill has {self.fill.shape} values for {len(plan.channels)} channels")
        self.input_scale = input_scale
        self._gain = self._bias = None
        if input_scale is not None:
            gain, bias = input_scale.per_channel(plan.channels, plan.index_channels)
            self._gain, self._bias = gain[:, None, None], bias[:, None, None]

    @property
    def channels(self) -> tuple[str, ...]:
        """The channel names, in order."""
        return tuple(self.plan.channels)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the grid read (the reference grid, or the processing grid)."""
        if self.grid is not None:
            return self.grid.height, self.grid.width
        return self.scene.height, self.scene.width

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the reference grid as channels.

        Parameters
        ----------
        rows, cols : tuple of int
            ``(start, stop)`` reference-grid pixels; positions past the scene's
            edges are reflect-padded.

        Returns
        -------
        channels : ndarray of shape (channel, row, col), float32
        valid : ndarray of shape (row, col), bool
            True where every band the channels use has data.
        """
        data, valid = self.scene.read(rows, cols, self.plan.indexes, grid=self.grid)
        data = self.plan.build(data, valid)
        if self._gain is not None:
            data = data * self._gain + self._bias
        if self.fill is not None:
            fill_channels(data, valid, self.fill, undefined=bool(self.plan.index_channels))
        return data, valid

    __call__ = read

    def with_fill(self, fill: Optional[Sequence[float]]) -> "ChannelSource":
        """The same source with another fill policy (``None``: unfilled)."""
        return ChannelSource(self.scene, self.plan, fill=fill, input_scale=self.input_scale, grid=self.grid)


class ArraySource:
    """An in-memory image as the engine's source: windows reflect-padded past its edges, nodata filled.

    The in-memory counterpart of :class:`ChannelSource` (:func:`tiler.predict` streams an array through the
    same engine as a scene).

    Parameters
    ----------
    image : ndarray of shape (channel, row, col)
        The model's input channels, any real dtype (read as float32).
    valid : ndarray of shape (row, col), bool, optional
        Valid-data mask; default every pixel valid.
    fill : ndarray of shape (channel,), optional
        Per-channel value of invalid pixels and NaNs (the model's normalisation offset).

    Raises
    ------
    ValueError
        If ``valid`` or ``fill`` does not match ``image``.
    """

    def __init__(self, image: np.ndarray, valid: Optional[np.ndarray] = None, *,
                 fill: Optional[Sequence[float]] = None) -> None:
        self.image = np.asarray(image)
        if self.image.ndim != 3:
            raise ValueError(f"image must have shape (channel, row, col), got {self.image.shape}")
        self.valid = None if valid is None else np.asarray(valid, bool)
        if self.valid is not None and self.valid.shape != self.image.shape[1:]:
            raise ValueError(f"valid has shape {self.valid.shape}, the image {self.image.shape[1:]}")
        self.fill = None if fill is None else np.asarray(fill, np.float32)
        if self.fill is not None and self.fill.shape != (self.image.shape[0],):
            raise ValueError(f"fill has {self.fill.shape} values for {self.image.shape[0]} channels")

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image."""
        return self.image.shape[1], self.image.shape[2]

    def read(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """A window, reflect-padded (NumPy ``reflect`` mode, as a scene's reads), as float32 channels.

        Returns
        -------
        channels : ndarray of shape (channel, row, col), float32
        valid : ndarray of shape (row, col), bool
        """
        ridx = reflect_indices(rows[0], rows[1], self.shape[0])
        cidx = reflect_indices(cols[0], cols[1], self.shape[1])
        data = take_runs(self.image, ridx, cidx).astype(np.float32, copy=False)
        valid = (np.ones((len(ridx), len(cidx)), bool) if self.valid is None
                 else take_runs(self.valid, ridx, cidx))
        if self.fill is not None:
            fill_channels(data, valid, self.fill)
        return data, valid

    __call__ = read
