"""The training sampler: random patches of the labelled images, dihedral flips, colour jitter, rare
classes oversampled."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from tiler.blend import d4_transform
from tiler.labels import IGNORE
from tiler.training._config import TrainConfig
from tiler.training._data import LabelledImage

__all__ = ["make_sampler", "CLASS_INDEX_STEP"]

log = logging.getLogger(__name__)


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


def make_sampler(data: list[LabelledImage], cfg: TrainConfig, offset: np.ndarray, scale: np.ndarray):
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
                img, lab = d4_transform(img, k), d4_transform(lab, k)
                gain = rng.uniform(1 - cfg.jitter, 1 + cfg.jitter, size=(c, 1, 1))
                shift = rng.uniform(-cfg.jitter, cfg.jitter, size=(c, 1, 1)) / std_norm[:, None, None]
                img = (img * gain + shift - offset[:, None, None]) * std_norm[:, None, None]
                x[b] = np.transpose(img, (1, 2, 0))
                y[b] = lab
            return x, y

    return PatchSampler()
