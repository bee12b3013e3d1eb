"""How the fill of nodata inside a patch biases the prediction next to it (issue 21, item 5).

A nodata collar (the left fifth and top tenth) and a 160 px hole are cut into
whole images of Dubai tile 7 (never trained on); each is predicted with the
bundled model uncut and cut, the cut one with three fill policies:

* ``mean``: every nodata pixel the model's normalisation mean (tiler before
  this round);
* ``nearest``: the nearest valid pixel (whole-image prefill);
* ``reflect``: the valid neighbourhood mirrored across the edge, per patch
  (:func:`tiler.engine.reflect_fill`, what tiler does).

Printed per image and policy: mean IoU on the valid pixels against the truth
(uncut in the first column) and the largest change, in points, of a class's
share among the valid pixels within 8 px of the nodata edge, against the uncut
prediction there.

    python benchmarks/nodata_fill.py [--images 001 004 007]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import rasterio
from _timing import stamp  # benchmarks/_timing.py
from rasterio.errors import NotGeoreferencedWarning
from scipy import ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TILE7 = os.path.join(ROOT, "..", "shared", "data", "dubai_aerial", "tile_7")
EDGE_PX = 8


def cut(shape: tuple[int, int]) -> np.ndarray:
    """The valid mask of an image with a nodata collar and a hole."""
    h, w = shape
    valid = np.ones(shape, bool)
    valid[:, : w // 5] = False
    valid[: h // 10] = False
    valid[h // 2 - 80:h // 2 + 80, w // 2 - 80:w // 2 + 80] = False
    return valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", default=["001", "004", "007"])
    args = parser.parse_args()
    print(stamp(), flush=True)
    from tiler import predict
    from tiler.labels import LabelScheme, read_mask
    from tiler.metrics import confusion_matrix, scores
    from tiler.model import DEFAULT_MODEL_PATH, read_info

    offset = np.asarray(read_info(DEFAULT_MODEL_PATH).offset, np.float32)[:, None, None]
    scheme = LabelScheme.from_file(os.path.join(ROOT, "examples", "dubai_classes.json"))
    k = len(scheme.names)

    def miou(pred, labels, ok):
        ok = ok & (labels != 255)
        return scores(confusion_matrix(np.where(ok, pred, -1).astype(np.int64), np.where(ok, labels, 255), k),
                      scheme.names)["mean_iou"]

    print("| image | uncut mIoU | mean fill | nearest | reflect (tiler) | max share change at the edge, points "
          "(mean / nearest / reflect) |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.images:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(os.path.join(TILE7, "images", f"image_part_{name}.jpg")) as ds:
                image = ds.read().astype(np.float32)
        labels = scheme.decode(read_mask(os.path.join(TILE7, "masks", f"image_part_{name}.png")))
        valid = cut(labels.shape)
        edge = valid & (ndimage.distance_transform_edt(valid) <= EDGE_PX)
        uncut = predict(image).argmax(0)
        nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        preds = {
            "mean": predict(np.where(valid, image, offset)),
            "nearest": predict(image[:, nearest[0], nearest[1]]),
            "reflect": predict(image, valid=valid),
        }
        ious, shifts = [], []
        for p in preds.values():
            c = np.nan_to_num(p, nan=-1.0).argmax(0)
            ious.append(miou(c, labels, valid))
            shifts.append(max(abs((c[edge] == j).mean() - (uncut[edge] == j).mean()) for j in range(k)) * 100)
        print(f"| {name} | {miou(uncut, labels, valid):.4f} | " + " | ".join(f"{v:.4f}" for v in ious)
              + " | " + " / ".join(f"{v:.1f}" for v in shifts) + " |", flush=True)


if __name__ == "__main__":
    main()
