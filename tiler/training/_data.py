"""Training data: images and their masks (or polygon labels) found, read as a model's channels, checked."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from tiler.domain import measure_domain
from tiler.errors import BandMismatchError, DatasetError
from tiler.indices import INDICES, ChannelPlan
from tiler.labels import LabelScheme, read_mask
from tiler.scene import open_scene
from tiler.source import ChannelSource
from tiler.training._vector_labels import VectorLabels

__all__ = ["LabelledImage", "find_pairs", "find_images", "load_labelled", "training_domain", "load_data"]

log = logging.getLogger(__name__)


_IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".img", ".vrt")


@dataclass
class LabelledImage:
    """One training or validation image and its decoded labels.

    Attributes
    ----------
    path : str
    image : ndarray of shape (channel, row, col), float32
    labels : ndarray of shape (row, col), uint8 (255 = ignore)
    dtypes : tuple of str
        Per channel, the dtype of the values as read (for the model's
        training domain).
    pixel_size : float or None
        Ground sampling distance in metres, None without georeferencing.
    """

    path: str
    image: np.ndarray
    labels: np.ndarray
    dtypes: tuple[str, ...] = ()
    pixel_size: Optional[float] = None


def _expand(pattern: str) -> list[str]:
    dirs = sorted(d for d in glob.glob(os.path.expanduser(pattern)) if os.path.isdir(d))
    if not dirs:
        raise DatasetError(f"no folder matches {pattern!r}; check the path (quote glob patterns)")
    return dirs


def find_pairs(images: str, masks: str) -> list[tuple[str, str]]:
    """Pair image files with mask files by file stem.

    Parameters
    ----------
    images, masks : str
        Folders, or glob patterns matching several folders (e.g.
        ``"data/tile_[1-6]/images"``); the n-th image folder pairs with the
        n-th mask folder in sorted order.

    Returns
    -------
    list of (image path, mask path)

    Raises
    ------
    DatasetError
        If the folders do not pair up, or an image has no mask.
    """
    image_dirs, mask_dirs = _expand(images), _expand(masks)
    if len(image_dirs) != len(mask_dirs):
        raise DatasetError(
            f"{len(image_dirs)} image folder(s) but {len(mask_dirs)} mask folder(s); "
            "the patterns must match folders one to one"
        )
    pairs = []
    for idir, mdir in zip(image_dirs, mask_dirs):
        masks_by_stem = {os.path.splitext(f)[0]: os.path.join(mdir, f) for f in os.listdir(mdir)
                         if f.lower().endswith(_IMAGE_SUFFIXES)}
        for f in sorted(os.listdir(idir)):
            if not f.lower().endswith(_IMAGE_SUFFIXES):
                continue
            stem = os.path.splitext(f)[0]
            if stem not in masks_by_stem:
                raise DatasetError(f"image {os.path.join(idir, f)!r} has no mask named {stem}.* in {mdir!r}")
            pairs.append((os.path.join(idir, f), masks_by_stem[stem]))
    if not pairs:
        raise DatasetError(f"no images found in {image_dirs}")
    return pairs


def find_images(images: str) -> list[tuple[str, None]]:
    """The image files of folders (or glob patterns of folders), for polygon labels: ``(path, None)`` pairs.

    Raises
    ------
    DatasetError
        If no image is found.
    """
    pairs = [(os.path.join(d, f), None) for d in _expand(images) for f in sorted(os.listdir(d))
             if f.lower().endswith(_IMAGE_SUFFIXES)]
    if not pairs:
        raise DatasetError(f"no images found in {images!r}")
    return pairs


def load_labelled(pairs: Sequence[tuple[str, Optional[str]]], labels: LabelScheme, *,
                  channels: Optional[Sequence[str]] = None,
                  band_names: Optional[Sequence[str]] = None,
                  vector=None) -> tuple[list[LabelledImage], tuple[str, ...]]:
    """Read image/mask pairs into memory, building the model's channels.

    Parameters
    ----------
    pairs : sequence of (image path, mask path or None)
        A mask path of None: the labels are burnt from ``vector``.
    labels : LabelScheme
        Decodes the masks.
    vector : tiler.training.VectorLabels, optional
        Polygon labels, rasterised onto each image's grid.
    channels : sequence of str, optional
        The model's input channels: band names of the images and spectral
        index names (e.g. ``red, green, blue, nir, ndwi``), computed from the
        images' bands as ``tiler run`` computes them from a scene. Default:
        the images' bands.
    band_names : sequence of str, optional
        Names of the images' bands, one per band, where the files do not name
        them. Without it, unnamed bands as many as ``channels`` (none of them
        an index) are taken as those channels, in order.

    Returns
    -------
    images : list of LabelledImage
        Images of shape (channel, row, col), float32; an index channel is NaN
        where undefined (a zero denominator or nodata).
    channels : tuple of str

    Raises
    ------
    DatasetError
        For mismatched sizes, band counts, unnamed bands without names, or a
        channel the images cannot provide.
    """

    out = []
    wanted: Optional[tuple[str, ...]] = tuple(c.strip().lower() for c in channels) if channels else None
    names_given = tuple(n.strip().lower() for n in band_names) if band_names else None
    for ipath, mpath in pairs:
        with open_scene(ipath) as sc:
            names = names_given
            if names is None and any(n is None for n in sc.band_names):
                if wanted is not None and len(wanted) == sc.count and not any(c in INDICES for c in wanted):
                    names = wanted  # unnamed bands given as the channels, in order
                else:
                    raise DatasetError(f"bands of {ipath!r} are unnamed ({sc.describe_bands()}); name them with "
                                       "--band-names (one name per band, e.g. red,green,blue,nir)")
            if names is not None and len(names) != sc.count:
                raise DatasetError(f"{ipath!r} has {sc.count} bands, expected {len(names)} ({', '.join(names)})")
            if names is not None:
                sc.rename_bands(names)
            want = wanted or tuple(sc.band_names)  # type: ignore[arg-type]
            try:
                plan = ChannelPlan.for_scene(sc, want)
            except BandMismatchError as exc:
                raise DatasetError(f"{exc}. Name the images' bands with --band-names (one per band, e.g. "
                                   "blue,green,red,nir) if the files do not name them so") from None
            image, _ = ChannelSource(sc, plan).read((0, sc.height), (0, sc.width))
            dtypes, pixel_size = plan.dtypes(sc), sc.pixel_size_m()
            if mpath is None:
                if vector is None:
                    raise DatasetError(f"image {ipath!r} has no mask and no polygon labels were given")
                decoded = vector.mask(ipath, sc.height, sc.width, crs=sc.crs if sc.georeferenced else None,
                                      transform=sc.transform if sc.georeferenced else None)
        if wanted is None:
            wanted = want
        if mpath is not None:
            mask = read_mask(mpath)
            if mask.shape[1:] != image.shape[1:]:
                raise DatasetError(f"mask {mpath!r} is {mask.shape[1:]} but image {ipath!r} is {image.shape[1:]}")
            decoded = labels.decode(mask)
        out.append(LabelledImage(ipath, image, decoded, dtypes, pixel_size))
    return out, wanted  # type: ignore[return-value]


#: Every how many pixels a training image is sampled for its domain's percentiles.
_DOMAIN_STRIDE = 7


def training_domain(data: Sequence[LabelledImage], channels: Sequence[str]):
    """The :class:`tiler.domain.InputDomain` of training images (before the NaN fill).

    Per channel the dtype (the images' common one; ``float32`` if they differ)
    and 1st/99th percentiles of the valid values (every 7th pixel of each
    image), and the median pixel size where all images are georeferenced.

    Parameters
    ----------
    data : sequence of LabelledImage
    channels : sequence of str

    Returns
    -------
    InputDomain
    """

    samples, dtypes = [], []
    for k in range(len(channels)):
        samples.append(np.concatenate([d.image[k].ravel()[::_DOMAIN_STRIDE] for d in data]))
        kinds = {d.dtypes[k] for d in data if d.dtypes}
        dtypes.append(kinds.pop() if len(kinds) == 1 else "float32")
    sizes = [d.pixel_size for d in data]
    pixel = float(np.median(sizes)) if sizes and all(v is not None for v in sizes) else None
    return measure_domain(list(channels), samples, dtypes, pixel_size=pixel)



def load_data(images, masks, val_images, val_masks, labels, vector_labels, label_field, channels, band_names):
    """The training and validation pairs and images of :func:`train`, checked to be disjoint.

    Returns
    -------
    train_pairs, val_pairs : list of (str, str or None)
    train_data, val_data : list of LabelledImage
    names : list of str
        The channels, as built for the training images.

    Raises
    ------
    DatasetError
        Neither masks nor polygon labels, or validation images that are also training images.
    """
    vector = None
    if vector_labels is not None:

        vector = VectorLabels(vector_labels, labels, field=label_field)
    elif masks is None or val_masks is None:
        raise DatasetError("give mask folders (MASKS and --val-masks) or polygon labels (--labels)")
    train_pairs = find_pairs(images, masks) if masks is not None else find_images(images)
    val_pairs = find_pairs(val_images, val_masks) if val_masks is not None else find_images(val_images)
    overlap_files = {os.path.realpath(p) for p, _ in train_pairs} & {os.path.realpath(p) for p, _ in val_pairs}
    if overlap_files:
        raise DatasetError(
            f"{len(overlap_files)} validation image(s) are also training images, e.g. "
            f"{sorted(overlap_files)[0]!r}; validate on held-out images only"
        )
    train_data, names = load_labelled(train_pairs, labels, channels=channels, band_names=band_names, vector=vector)
    val_data, _ = load_labelled(val_pairs, labels, channels=names, band_names=band_names, vector=vector)
    return train_pairs, val_pairs, train_data, val_data, names
