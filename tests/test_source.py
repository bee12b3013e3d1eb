"""The source (tiler.source): a scene window as a model's channels, nodata filled."""

import os
import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning

import tiler
from tests.conftest import DUBAI, needs_shared


@needs_shared(DUBAI)
def test_nodata_next_to_data_does_not_bias_the_prediction_there():
    """Issue 21.5: with the mean colour as fill, class shares within 8 px of a nodata collar moved by 16 points.

    Oracle: the prediction of the uncut real image and its truth mask (tile 7, never trained on).
    """
    from scipy import ndimage

    from tiler.labels import LabelScheme, read_mask
    from tiler.metrics import confusion_matrix, scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(DUBAI / "tile_7" / "images" / "image_part_001.jpg") as ds:
            image = ds.read().astype(np.float32)
    scheme = LabelScheme.from_file(os.path.join(os.path.dirname(__file__), "..", "examples", "dubai_classes.json"))
    labels = scheme.decode(read_mask(str(DUBAI / "tile_7" / "masks" / "image_part_001.png")))
    h, w = labels.shape
    valid = np.ones((h, w), bool)
    valid[:, : w // 5] = False  # a collar
    valid[: h // 10] = False
    valid[h // 2 - 80:h // 2 + 80, w // 2 - 80:w // 2 + 80] = False  # a hole
    uncut = tiler.predict(image).argmax(0)
    probs = tiler.predict(np.where(valid, image, 0.0), valid=valid)
    assert np.isnan(probs[:, ~valid]).all()
    cut = np.nan_to_num(probs, nan=-1.0).argmax(0)
    k = len(scheme.names)

    def miou(pred):
        ok = valid & (labels != 255)
        cm = confusion_matrix(np.where(ok, pred, -1).astype(np.int64), np.where(ok, labels, 255), k)
        return scores(cm, scheme.names)["mean_iou"]

    assert abs(miou(cut) - miou(uncut)) <= 0.01
    edge = valid & (ndimage.distance_transform_edt(valid) <= 8)
    for j in range(k):
        assert abs((cut[edge] == j).mean() - (uncut[edge] == j).mean()) <= 0.05, scheme.names[j]
