"""A scene's description (tiler.info, tiler info): the processing grid and why."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SENTINEL2, needs_shared
from tiler.cli import main


@needs_shared(SENTINEL2)
def test_info_shows_the_processing_grid_and_why(runner):
    pytest.importorskip("ukis_csmask")
    r = runner.invoke(main, ["info", str(SENTINEL2), "--model", "clouds-s2-l1c-4b"])
    assert r.exit_code == 0, r.output
    assert "processing 645 x 649 px of 30 (average): the model's pixel size" in r.output
    r = runner.invoke(main, ["info", str(SENTINEL2), "--model", "clouds-s2-l1c-4b", "--resample", "off", "--json"])
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["processing_grid"]["factor"] == 1.0 and "--resample off" in doc["processing_grid"]["reason"]
