"""Confusion matrix and IoU / Dice, against hand-counted values."""

import numpy as np
import pytest

from tiler.labels import IGNORE
from tiler.metrics import confusion_matrix, scores


def test_scores_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, -1]])
    cm = confusion_matrix(pred, truth, 3)
    # (t,p): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); IGNORE and -1 (nodata) not counted
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(cm, ["a", "b", "c"])
    assert s["iou"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "c": pytest.approx(1 / 2)}
    assert s["dice"]["a"] == pytest.approx(2 / 4)
    assert s["mean_iou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)


def test_absent_class_is_undefined_not_zero():
    s = scores(confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2)), 2))
    assert s["iou"]["class_1"] is None and s["mean_iou"] == 1.0
