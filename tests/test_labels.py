"""Class schemes (tiler.labels): colours, indices, the ignored label."""

import json

import numpy as np
import pytest

from tiler.errors import DatasetError
from tiler.labels import IGNORE, LabelScheme


def test_label_scheme_decodes_colours_indices_and_ignore(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": [{"name": "water", "colour": "#E2A929"},
                                            {"name": "land", "colour": [132, 41, 246]}],
                                "ignore": ["#9B9B9B", 255]}))
    scheme = LabelScheme.from_file(path)
    rgb = np.array([[[0xE2, 132, 0x9B]], [[0xA9, 41, 0x9B]], [[0x29, 246, 0x9B]]], np.uint8)
    assert scheme.decode(rgb).tolist() == [[0, 1, IGNORE]]
    assert scheme.decode(np.array([[[1, 0, 255]]])).tolist() == [[1, 0, IGNORE]]
    with pytest.raises(DatasetError, match="#010203 are neither a class nor ignored"):
        scheme.decode(np.array([[[1]], [[2]], [[3]]], np.uint8))
    with pytest.raises(DatasetError, match="not class indices"):
        scheme.decode(np.array([[[7]]]))
    assert scheme.colormap()[0] == (0xE2, 0xA9, 0x29, 255)


def test_label_scheme_rejects_duplicates():
    with pytest.raises(DatasetError, match="unique"):
        LabelScheme(("a", "a"), ("#000000", "#FFFFFF"))
