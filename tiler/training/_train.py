"""Training a U-Net on small labelled data (``tiler train``)."""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tiler.destination import Destination
from tiler.errors import BandMismatchError, DatasetError
from tiler.labels import IGNORE, LabelScheme, read_mask
from tiler.metrics import confusion_matrix, scores
from tiler.model import ModelInfo, TilerModel, load_model, save_model
from tiler.scene import open_scene
from tiler.training._config import (
    TrainConfig,
)

__all__ = ["LabelledImage", "find_pairs", "load_labelled", "train", "checkpoint_folder"]

log = logging.getLogger(__name__)


def checkpoint_folder(out: str) -> str:
    """The work folder of a training run's per-epoch checkpoint: ``.NAME.tiler-train`` beside ``out``."""
    folder, name = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{name}.tiler-train")

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
    from tiler.indices import INDICES, ChannelPlan
    from tiler.source import ChannelSource

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
    from tiler.domain import measure_domain

    samples, dtypes = [], []
    for k in range(len(channels)):
        samples.append(np.concatenate([d.image[k].ravel()[::_DOMAIN_STRIDE] for d in data]))
        kinds = {d.dtypes[k] for d in data if d.dtypes}
        dtypes.append(kinds.pop() if len(kinds) == 1 else "float32")
    sizes = [d.pixel_size for d in data]
    pixel = float(np.median(sizes)) if sizes and all(v is not None for v in sizes) else None
    return measure_domain(list(channels), samples, dtypes, pixel_size=pixel)


def _d4(a: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform k in 0..7 of the last two axes: rot90 k % 4, then mirror if k >= 4."""
    a = np.rot90(a, k % 4, axes=(-2, -1))
    return a[..., ::-1] if k >= 4 else a


#: Grid step (pixels) of the class-pixel index behind ``class_balance``.
CLASS_INDEX_STEP = 8


def _class_index(data: Sequence[LabelledImage], step: int = CLASS_INDEX_STEP) -> list[np.ndarray]:
    """Per class present, the ``(image, row, col)`` of its pixels on a ``step`` grid, int32 of shape (n, 3)."""
    found: dict[int, list[np.ndarray]] = {}
    for i, d in enumerate(data):
        grid = d.labels[::step, ::step]
        for k in np.unique(grid):
            if k == IGNORE:
                continue
            r, c = np.nonzero(grid == k)
            found.setdefault(int(k), []).append(np.stack([np.full_like(r, i), r * step, c * step], 1))
    return [np.concatenate(found[k]).astype(np.int32) for k in sorted(found)]


def _make_sampler(data: list[LabelledImage], cfg: TrainConfig, offset: np.ndarray, scale: np.ndarray):
    import keras

    areas = np.array([d.labels.size for d in data], np.float64)
    prob = areas / areas.sum()
    std_norm = 1.0 / scale
    by_class = _class_index(data) if cfg.class_balance > 0 else []

    def origin(rng: np.random.Generator, p: int) -> tuple[LabelledImage, int, int]:
        if by_class and rng.random() < cfg.class_balance:
            pixels = by_class[rng.integers(len(by_class))]
            i, pr, pc = pixels[rng.integers(len(pixels))]
            d = data[i]
            height, width = d.labels.shape
            r = pr - p // 2 + rng.integers(-(p // 4), p // 4 + 1)
            s = pc - p // 2 + rng.integers(-(p // 4), p // 4 + 1)
            return d, int(np.clip(r, 0, max(0, height - p))), int(np.clip(s, 0, max(0, width - p)))
        d = data[rng.choice(len(data), p=prob)]
        height, width = d.labels.shape
        return d, int(rng.integers(0, max(1, height - p + 1))), int(rng.integers(0, max(1, width - p + 1)))

    class PatchSampler(keras.utils.PyDataset):
        """Random patches (some centred on rare classes) with dihedral transforms and colour jitter."""

        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self) -> int:
            return cfg.steps_per_epoch

        def on_epoch_end(self) -> None:
            self.epoch += 1

        def __getitem__(self, idx: int):
            rng = np.random.default_rng((cfg.seed, self.epoch, idx))
            p = cfg.patch_size
            c = data[0].image.shape[0]
            x = np.empty((cfg.batch_size, p, p, c), np.float32)
            y = np.empty((cfg.batch_size, p, p), np.uint8)
            for b in range(cfg.batch_size):
                d, r, s = origin(rng, p)
                img = d.image[:, r:r + p, s:s + p]
                lab = d.labels[r:r + p, s:s + p]
                if img.shape[1:] != (p, p):  # image smaller than a patch: reflect-pad
                    pr, pc = p - img.shape[1], p - img.shape[2]
                    img = np.pad(img, ((0, 0), (0, pr), (0, pc)), mode="reflect")
                    lab = np.pad(lab, ((0, pr), (0, pc)), constant_values=IGNORE)
                k = int(rng.integers(8))
                img, lab = _d4(img, k), _d4(lab, k)
                gain = rng.uniform(1 - cfg.jitter, 1 + cfg.jitter, size=(c, 1, 1))
                shift = rng.uniform(-cfg.jitter, cfg.jitter, size=(c, 1, 1)) / std_norm[:, None, None]
                img = (img * gain + shift - offset[:, None, None]) * std_norm[:, None, None]
                x[b] = np.transpose(img, (1, 2, 0))
                y[b] = lab
            return x, y

    return PatchSampler()


def _encoder_layers(net) -> list:
    from tiler.model import encoder_layers

    return encoder_layers(net)


def evaluate_images(model: TilerModel, data: Sequence[LabelledImage], *, overlap: float,
                    batch_size: int) -> dict:
    """Predict whole images with the blending engine and score them.

    Returns
    -------
    dict
        :func:`tiler.metrics.scores` over all images together.
    """
    from tiler.pipeline import predict

    k = len(model.info.classes)
    cm = np.zeros((k, k), np.int64)
    for d in data:
        # Keras itself: the weights change every epoch, a converted runtime would be rebuilt each time.
        probs = predict(d.image, model=model, overlap=overlap, batch_size=batch_size, runtime="keras")
        cm += confusion_matrix(np.argmax(probs, axis=0), d.labels, k)
    return scores(cm, model.info.classes)


def train(
    images: str,
    masks: Optional[str],
    out: Any,
    *,
    labels: LabelScheme,
    val_images: str,
    val_masks: Optional[str],
    vector_labels: Optional[str] = None,
    label_field: str = "class",
    channels: Optional[Sequence[str]] = None,
    band_names: Optional[Sequence[str]] = None,
    config: TrainConfig = TrainConfig(),
    on_epoch: Optional[Callable[[dict], None]] = None,
    command: Optional[str] = None,
    init: Optional[str] = None,
    resume: bool = False,
) -> dict:
    """Train a U-Net and save the best model (by validation mean IoU).

    Random patches of the training images, with dihedral flips/rotations and
    colour jitter, are fitted with cross-entropy + soft Dice (unlabelled
    pixels ignored). After every epoch the model predicts the *whole*
    validation images through the same blending engine as ``tiler run`` and is
    scored by mean IoU; the best model so far is saved to ``out``. Training
    stops early after ``patience`` epochs without improvement.

    Parameters
    ----------
    images, masks : str
        Training image and mask folders (or glob patterns, see :func:`find_pairs`);
        ``masks`` None with ``vector_labels``.
    out : str or Destination
        Output ``.keras`` path (replaced each time the validation improves),
        or a :class:`tiler.destination.Destination` already checked and locked.
    labels : LabelScheme
        Classes, their mask colours and the ignored colours.
    val_images, val_masks : str
        Validation folders: whole held-out images, never patches of training
        images; ``val_masks`` None with ``vector_labels``.
    vector_labels : path-like, optional
        Polygon labels instead of masks (:class:`tiler.training.VectorLabels`):
        any vector file pyogrio reads, or a WKT CSV; rasterised onto each
        training and validation image's grid.
    label_field : str, default "class"
        The polygons' class attribute (a class name or index).
    channels : sequence of str, optional
        The model's input channels: image band names and spectral index
        names (e.g. ``red, green, blue, nir, ndwi, savi``); default: the
        images' bands. Stored in the model file, so that ``tiler run`` builds
        the same channels from a scene.
    band_names : sequence of str, optional
        Names of the images' bands where the files do not name them.
    config : TrainConfig
    on_epoch : callable, optional
        Called with a dict per epoch (epoch, loss, val scores, seconds, best).
    command : str, optional
        The command line, recorded in the model file.
    init : str, optional
        A tiler model file to start from (fine-tuning): its weights and its
        channel normalisation are kept; its channels and classes must match.
    resume : bool, default False
        Go on from the last finished epoch of an interrupted run of the same
        data and config. Every epoch leaves a checkpoint (the network with its
        optimizer state, the history and the early-stopping state) in a work
        folder beside ``out`` (``.NAME.tiler-train/``), removed when the run
        ends; the patch sampler is keyed by seed, epoch and batch, so a
        resumed run draws the same patches as an uninterrupted one and, without
        dropout, ends with the same weights up to float rounding (TensorFlow's
        CPU kernels are not bit-reproducible across a reload: the training loss
        of the epoch after the next was within 0.02 %). Dropout's random masks
        after the first resumed epoch differ from an uninterrupted run's
        (loss within 1 %).

    Returns
    -------
    dict
        Training report: config, epochs run, best epoch and its validation scores.

    Raises
    ------
    DatasetError
        For missing or unpaired data, or validation images that are also
        training images.
    """
    from tiler.model import import_keras

    keras = import_keras()

    from tiler.model import DiceCrossEntropy, JaccardCrossEntropy
    from tiler.source import fill_channels

    dest = Destination.coerce(out, overwrite=True)
    t0 = time.perf_counter()
    train_pairs, val_pairs, train_data, val_data, names = _load_data(
        images, masks, val_images, val_masks, labels, vector_labels, label_field, channels, band_names)
    keras.utils.set_random_seed(config.seed)
    net, offset, scale, config, pretrained = _starting_network(init, config, names, labels, train_data)
    domain = training_domain(train_data, names)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    loss = (DiceCrossEntropy(config.dice_weight) if config.loss == "dice"
            else JaccardCrossEntropy(config.dice_weight))
    frozen = _encoder_layers(net) if config.encoder is not None and config.freeze_epochs > 0 else []
    for layer in frozen:
        layer.trainable = False
    net.compile(optimizer=optimizer, loss=loss)
    for d in train_data + val_data:
        # Undefined index values are fed as the channel mean, as `tiler run` does.
        fill_channels(d.image, None, offset)
    sampler = _make_sampler(train_data, config, offset, scale)
    info_kwargs = dict(channels=names, classes=labels,
                       normalization={"offset": offset.tolist(), "scale": scale.tolist()},
                       patch_size=config.patch_size, depth=config.depth, activation="softmax", domain=domain,
                       inference=config.recommendation())
    meta = ModelInfo(channels=tuple(names), classes=labels.names, colours=labels.colours,
                     offset=tuple(offset.tolist()), scale=tuple(scale.tolist()),
                     patch_size=config.patch_size, depth=config.depth)
    checkpoint = _Checkpoint(dest.path, {"config": asdict(config), "init": init, "channels": list(names),
                                         "classes": list(labels.names),
                                         "train": [p for p, _ in train_pairs], "val": [p for p, _ in val_pairs]})
    run = _Epochs(config, checkpoint, t0=t0, on_epoch=on_epoch,
                  validate=lambda net: evaluate_images(TilerModel(net, meta), val_data, overlap=config.val_overlap,
                                                       batch_size=config.batch_size),
                  save=lambda net, record: save_model(net, checkpoint.best, training=record, **info_kwargs),
                  record={"command": command, "config": asdict(config), "init": init, "pretrained": pretrained,
                          "train_images": [p for p, _ in train_pairs], "val_images": [p for p, _ in val_pairs]})
    done_epochs = 0
    if resume:
        state = checkpoint.load(keras)
        if state is not None:
            net, saved = state
            done_epochs = run.resume(saved)
            sampler.epoch = done_epochs
            frozen = _encoder_layers(net) if config.encoder is not None and done_epochs < config.freeze_epochs \
                else []
            log.info("resuming after epoch %d of %s (best %s at epoch %s)", done_epochs, dest.path,
                     run.best["mean_iou"], run.best["epoch"])

    class Validate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if run.end_epoch(self.model, epoch + 1, logs or {}):
                self.model.stop_training = True

    first = min(config.epochs, config.freeze_epochs) if frozen else config.epochs
    finished = run.finished(done_epochs)  # a resumed run that had already ended
    if not finished and done_epochs < first:
        net.fit(sampler, epochs=first, initial_epoch=done_epochs, callbacks=[Validate()], verbose=0)
    if frozen and first < config.epochs and not net.stop_training and not finished:
        # Unfreeze and go on: a new compile (trainable variables changed) with the learning rate reached.
        for layer in frozen:
            layer.trainable = True
        lr = float(keras.ops.convert_to_numpy(net.optimizer.learning_rate)) * config.unfreeze_lr_factor
        net.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss)
        net.fit(sampler, epochs=config.epochs, initial_epoch=first, callbacks=[Validate()], verbose=0)
    report = run.record()
    report["epochs_run"] = len(run.history)
    report["history"] = run.history
    if run.best["epoch"] is not None:  # the best model, kept in the checkpoint, gets the whole run's record
        save_model(load_model(checkpoint.best.path).keras_model, dest, training=report, **info_kwargs)
    checkpoint.remove()
    return report


def _load_data(images, masks, val_images, val_masks, labels, vector_labels, label_field, channels, band_names):
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
        from tiler.training._vector_labels import VectorLabels

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


def _starting_network(init, config: TrainConfig, names, labels: LabelScheme, train_data):
    """The network :func:`train` starts from, with its channel normalisation and what it was pretrained on.

    ``init``: that model file's network and normalisation (its encoder inherited
    into ``config``); a ``config.encoder``: a new U-Net on that pretrained
    encoder, normalised as the encoder was trained; else a new U-Net,
    normalised by the training images' per-channel mean and standard deviation.

    Returns
    -------
    net : keras.Model
    offset, scale : ndarray of shape (channels,), float32
    config : TrainConfig
        ``config``, with the init model's encoder where it had one.
    pretrained : dict or None
        The pretrained weights' record (source, licence), carried on by an init model.

    Raises
    ------
    DatasetError
        An init model of other channels, classes or depth; an encoder on channels other than RGB.
    """
    from tiler.model import build_unet

    if init is not None:
        start = load_model(init)
        if start.info.channels != tuple(names) or start.info.classes != labels.names:
            raise DatasetError(
                f"--init model {init!r} has channels {list(start.info.channels)} and classes "
                f"{list(start.info.classes)}, but the data has {list(names)} and {list(labels.names)}"
            )
        if start.info.depth != config.depth or config.patch_size % (2 ** start.info.depth):
            raise DatasetError(f"--init model {init!r} has depth {start.info.depth}; pass --depth {start.info.depth}")
        offset = np.asarray(start.info.offset, np.float32)
        scale = np.asarray(start.info.scale, np.float32)
        net = start.keras_model
        # A model that started from a pretrained encoder keeps saying so (its layers, --freeze-epochs).
        inherited = (start.info.training.get("config") or {}).get("encoder")
        if config.encoder is None and inherited:
            config = dataclasses.replace(config, encoder=inherited)
    elif config.encoder is not None:
        from tiler.model import ENCODERS, build_encoder_unet

        if tuple(names) != ("red", "green", "blue"):
            raise DatasetError(f"encoder {config.encoder!r} was pretrained on RGB photographs: the images' channels "
                               f"must be red, green, blue, got {list(names)} (pass --channels red,green,blue)")
        enc = ENCODERS[config.encoder]
        offset = np.asarray(enc.offset, np.float32)
        scale = np.asarray(enc.scale, np.float32)
        net = build_encoder_unet(config.encoder, len(labels.names), dropout=config.dropout)
    else:
        stacked = np.concatenate([d.image.reshape(d.image.shape[0], -1) for d in train_data], axis=1)
        offset = np.nanmean(stacked, axis=1).astype(np.float32)
        scale = np.maximum(np.nanstd(stacked, axis=1), 1e-6).astype(np.float32)
        del stacked
        net = build_unet(len(names), len(labels.names), depth=config.depth,
                         base_filters=config.base_filters, dropout=config.dropout, batch_norm=config.batch_norm,
                         kernel_initializer=config.kernel_initializer)
    pretrained = None
    if config.encoder is not None:
        from tiler.model import ENCODERS

        pretrained = ENCODERS[config.encoder].record()
    elif init is not None:
        pretrained = start.info.training.get("pretrained")
    return net, offset, scale, config, pretrained


class _Epochs:
    """The epochs of one :func:`train`: validation, the best model, early stopping and the checkpoint.

    Parameters
    ----------
    config : TrainConfig
    checkpoint : _Checkpoint
    t0 : float
        ``time.perf_counter()`` at the start of the run.
    on_epoch : callable or None
        Called with each epoch's row.
    validate : callable
        ``validate(net) -> scores`` (:func:`tiler.training.evaluate_images`'s dict).
    save : callable
        ``save(net, record)``: save ``net`` as the best model with its training record.
    record : dict
        What the training record says of the run whatever its epochs (command, config, data).
    """

    def __init__(self, config: TrainConfig, checkpoint: _Checkpoint, *, t0: float, on_epoch, validate,
                 save, record: dict) -> None:
        self.config, self.checkpoint, self.t0 = config, checkpoint, t0
        self.on_epoch, self.validate, self.save, self.static = on_epoch, validate, save, record
        self.history: list[dict] = []
        self.best = {"mean_iou": -1.0, "epoch": None, "scores": None}
        self.stale = 0  # epochs since the validation last improved

    def resume(self, saved: dict) -> int:
        """Take the state of a checkpoint; return the epochs it had finished."""
        self.history, self.stale = saved["history"], saved["stale"]
        self.best.update(saved["best"])
        self.t0 -= saved["seconds"]
        return saved["epoch"]

    def _over_time(self, minutes: float) -> bool:
        return self.config.max_minutes is not None and minutes >= self.config.max_minutes

    def finished(self, done_epochs: int) -> bool:
        """Whether a resumed run had already ended (all epochs, patience or time spent)."""
        return bool(done_epochs >= self.config.epochs or (self.history and (
            self.stale >= self.config.patience or self._over_time(self.history[-1]["elapsed_minutes"]))))

    def record(self) -> dict:
        """The training record saved in the model file."""
        return {**self.static, "best_epoch": self.best["epoch"], "val_scores": self.best["scores"],
                "epochs_run": len(self.history) + 1,
                "minutes": round((time.perf_counter() - self.t0) / 60, 2)}

    def end_epoch(self, net, epoch: int, logs: dict) -> bool:
        """Validate epoch ``epoch`` (1-based); save the model if best, halve the rate when stale; checkpoint.

        Returns
        -------
        bool
            True to stop training (patience or time spent).
        """
        config = self.config
        tv = time.perf_counter()
        sc = self.validate(net)
        row = {"epoch": epoch, "loss": float(logs.get("loss", np.nan)),
               "val_mean_iou": sc["mean_iou"], "val_iou": sc["iou"], "val_pixel_accuracy": sc["pixel_accuracy"],
               "learning_rate": float(_to_numpy(net.optimizer.learning_rate)),
               "val_seconds": round(time.perf_counter() - tv, 1),
               "elapsed_minutes": round((time.perf_counter() - self.t0) / 60, 2)}
        improved = (sc["mean_iou"] or 0.0) > self.best["mean_iou"]
        if improved:
            self.best.update(mean_iou=sc["mean_iou"], epoch=epoch, scores=sc)
            self.stale = 0
            self.save(net, self.record())
        else:
            self.stale += 1
            if self.stale == max(1, config.patience // 2):
                lr = net.optimizer.learning_rate
                lr.assign(lr * 0.5)
        row["best"] = improved
        self.history.append(row)
        self.checkpoint.save(net, {"epoch": epoch, "history": self.history, "stale": self.stale,
                                   "best": self.best, "seconds": time.perf_counter() - self.t0})
        if self.on_epoch is not None:
            self.on_epoch(row)
        return self.stale >= config.patience or self._over_time((time.perf_counter() - self.t0) / 60)


def _to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


class _Checkpoint:
    """The state of a training run after its last finished epoch, in a work folder beside the model.

    ``last.keras`` (the network with its optimizer state, so Adam's moments
    and the learning rate go on where they were) and ``state.json`` (epoch,
    history, early-stopping state, elapsed seconds, and what the run is: its
    config, data and start), each written to a temporary name and renamed.
    """

    def __init__(self, out: str, identity: dict) -> None:
        self.folder = checkpoint_folder(out)
        self.identity = json.loads(json.dumps(identity, default=str))
        #: The best model so far (``best.keras``): the model file is written from it when the run ends, so
        #: that an interrupted run leaves no model file, only this folder to resume from.
        self._best = Destination(os.path.join(self.folder, "best.keras"), overwrite=True,
                                 intermediate=True)

    @property
    def best(self) -> Destination:
        """The destination of the best model so far (its folder created)."""
        os.makedirs(self.folder, exist_ok=True)
        return self._best

    def save(self, net, state: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        last = Destination(os.path.join(self.folder, "last.keras"), overwrite=True, intermediate=True)
        with last.writing() as tmp:  # an interrupted save leaves no temporary file
            net.save(tmp)
        Destination(os.path.join(self.folder, "state.json"), overwrite=True, intermediate=True).write_text(
            json.dumps({"identity": self.identity, **state}, default=str))

    def load(self, keras) -> Optional[tuple[Any, dict]]:
        """The network and state to resume from, or None (no checkpoint: start afresh).

        Raises
        ------
        DatasetError
            If the checkpoint is of another run (config, data or start differ).
        """
        try:
            with open(os.path.join(self.folder, "state.json"), encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        if state.get("identity") != self.identity:
            raise DatasetError(f"the checkpoint in {self.folder} is of another training run (other data or "
                               f"options); remove it (rm -r '{self.folder}') or run with the options it had")
        from tiler.model import DiceCrossEntropy, JaccardCrossEntropy  # noqa: F401 - registered for loading

        net = keras.saving.load_model(os.path.join(self.folder, "last.keras"), compile=True)
        return net, state

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
