"""The finished block (tiler.block): what a sink reads of it, checked against NumPy."""

import numpy as np
import pytest

from tiler.block import Block


def test_a_block_of_probabilities_gives_their_argmax_ties_to_the_lower_class_and_nodata_where_invalid():
    values = np.array([[[0.2, 0.5], [0.4, np.nan]], [[0.7, 0.5], [0.1, np.nan]]], np.float32)
    valid = np.array([[True, True], [False, False]])
    block = Block((10, 12), (0, 2), valid, values=values)
    expected = np.argmax(np.nan_to_num(values, nan=-1), axis=0).astype(np.uint8)  # ties: the lower index
    expected[~valid] = 255
    np.testing.assert_array_equal(block.class_map(), expected)
    assert block.class_map()[0, 1] == 0 and block.shape == (2, 2) and block.window.row_off == 10


def test_a_block_refuses_a_mask_of_another_shape_and_values_it_does_not_have():
    with pytest.raises(ValueError, match="valid mask of shape"):
        Block((0, 2), (0, 3), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="no values"):
        Block((0, 2), (0, 2), np.ones((2, 2), bool), class_map=np.zeros((2, 2), np.uint8)).values()
