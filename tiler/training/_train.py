"""Training a U-Net on small labelled data (``tiler train``): the loop."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import asdict
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tiler.destination import Destination
from tiler.errors import DatasetError
from tiler.labels import LabelScheme
from tiler.metrics import confusion_matrix, scores
from tiler.model import (
    ENCODERS,
    DiceCrossEntropy,
    JaccardCrossEntropy,
    ModelInfo,
    TilerModel,
    build_encoder_unet,
    build_unet,
    encoder_layers,
    import_keras,
    load_model,
    save_model,
)
from tiler.pipeline import predict
from tiler.source import fill_channels
from tiler.training._checkpoint import Checkpoint, Epochs
from tiler.training._config import TrainConfig
from tiler.training._data import LabelledImage, load_data, training_domain
from tiler.training._sampler import make_sampler

__all__ = ["train", "evaluate_images"]

log = logging.getLogger(__name__)


def _encoder_layers(net) -> list:
    return encoder_layers(net)


def evaluate_images(model: TilerModel, data: Sequence[LabelledImage], *, overlap: float,
                    batch_size: int) -> dict:
    """Predict whole images with the blending engine and score them.

    Returns
    -------
    dict
        :func:`tiler.metrics.scores` over all images together.
    """

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

    keras = import_keras()


    dest = Destination.coerce(out, overwrite=True)
    t0 = time.perf_counter()
    train_pairs, val_pairs, train_data, val_data, names = load_data(
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
    sampler = make_sampler(train_data, config, offset, scale)
    info_kwargs = dict(channels=names, classes=labels,
                       normalization={"offset": offset.tolist(), "scale": scale.tolist()},
                       patch_size=config.patch_size, depth=config.depth, activation="softmax", domain=domain,
                       inference=config.recommendation())
    meta = ModelInfo(channels=tuple(names), classes=labels.names, colours=labels.colours,
                     offset=tuple(offset.tolist()), scale=tuple(scale.tolist()),
                     patch_size=config.patch_size, depth=config.depth)
    checkpoint = Checkpoint(dest.path, {"config": asdict(config), "init": init, "channels": list(names),
                                         "classes": list(labels.names),
                                         "train": [p for p, _ in train_pairs], "val": [p for p, _ in val_pairs]})
    run = Epochs(config, checkpoint, t0=t0, on_epoch=on_epoch,
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

        pretrained = ENCODERS[config.encoder].record()
    elif init is not None:
        pretrained = start.info.training.get("pretrained")
    return net, offset, scale, config, pretrained
