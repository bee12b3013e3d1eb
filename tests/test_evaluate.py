"""`tiler evaluate` never silently drops the positives (issue 9).

Oracle: IoU counted by hand with NumPy on the same arrays.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from tests.conftest import write_tif
from tiler.cli import main
from tiler.errors import DatasetError
from tiler.evaluate import evaluate_masks
from tiler.labels import LabelScheme

SCHEME = LabelScheme(("background", "building"), ("#000000", "#FF0000"))


@pytest.fixture
def footprints(tmp_path):
    """A 0/255 building-footprint truth mask and a 0/1 class map predicting it imperfectly."""
    rng = np.random.default_rng(3)
    truth = np.zeros((64, 64), np.uint8)
    truth[10:30, 12:40] = 255
    truth[45:60, 5:20] = 255
    pred = (truth > 0).astype(np.uint8)
    flip = rng.random(truth.shape) < 0.1
    pred[flip] = 1 - pred[flip]
    t = write_tif(tmp_path / "truth.tif", truth[None], crs=None)
    p = write_tif(tmp_path / "pred.tif", pred[None], crs=None, nodata=255)
    return p, t, truth, pred


def _iou(truth_pos, pred_pos):
    return np.count_nonzero(truth_pos & pred_pos) / np.count_nonzero(truth_pos | pred_pos)


def test_a_binary_0_255_truth_mask_is_refused_with_the_fix(footprints):
    p, t, _, _ = footprints
    with pytest.raises(DatasetError, match=r"binary \(values 0 and 255\).*--truth-values 0,255"):
        evaluate_masks(p, t, classes=SCHEME)


def test_truth_values_map_the_footprints_and_score_them(footprints):
    p, t, truth, pred = footprints
    result = evaluate_masks(p, t, classes=SCHEME, truth_values=[0, 255])
    assert result["iou"]["building"] == pytest.approx(_iou(truth == 255, pred == 1))
    assert result["iou"]["background"] == pytest.approx(_iou(truth == 0, pred == 0))
    assert result["excluded"]["truth_ignored"] == 0 and result["pixels"] == truth.size


def test_the_class_file_can_carry_the_values(footprints, tmp_path):
    p, t, truth, pred = footprints
    doc = {"classes": [{"name": "background", "colour": "#000000", "value": 0},
                       {"name": "building", "colour": "#FF0000", "value": 255}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    r = CliRunner().invoke(main, ["evaluate", p, t, "--classes", str(tmp_path / "c.json"), "--json",
                                  str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "s.json").read_text())
    assert got["iou"]["building"] == pytest.approx(_iou(truth == 255, pred == 1))
    assert "not scored: 0 ignored truth pixels" in r.output


def test_cli_names_the_fix_and_exits_2(footprints, tmp_path):
    p, t, _, _ = footprints
    (tmp_path / "c.json").write_text(json.dumps(SCHEME.to_dict()))
    r = CliRunner().invoke(main, ["evaluate", p, t, "--classes", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and "--truth-values" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["evaluate", p, t, "--classes", str(tmp_path / "c.json"), "--truth-values", "0,255"])
    assert r.exit_code == 0, r.output


def test_prediction_values_that_are_no_class_are_counted_and_refused(tmp_path):
    truth = np.zeros((1, 20, 20), np.uint8)
    truth[0, :, 10:] = 1
    pred = truth.copy()
    pred[0, :4] = 7  # 20 % of the pixels: a class map of another model
    t = write_tif(tmp_path / "t.tif", truth, crs=None)
    p = write_tif(tmp_path / "p.tif", pred, crs=None, nodata=255)
    with pytest.raises(DatasetError, match=r"20.0% of the prediction's pixels have values \[7\]"):
        evaluate_masks(p, t, classes=SCHEME)
    result = evaluate_masks(p, t, classes=SCHEME, allow_ignored=True)
    assert result["excluded"]["prediction_no_class"] == 80
    assert result["excluded"]["prediction_no_class_values"] == [7]
    assert result["iou"]["building"] == pytest.approx(1.0)  # the 320 scored pixels are right


def test_a_few_ignored_pixels_are_reported_not_refused(tmp_path):
    truth = np.zeros((1, 100, 100), np.uint8)
    truth[0, 50:] = 1
    truth[0, 0, :50] = 255  # 0.5 % unlabelled
    t = write_tif(tmp_path / "t.tif", truth, crs=None)
    p = write_tif(tmp_path / "p.tif", np.clip(truth, 0, 1), crs=None, nodata=255)
    result = evaluate_masks(p, t, classes=SCHEME)
    assert result["excluded"]["truth_ignored"] == 50 and result["pixels"] == 10000 - 50


def _tagged_prediction(tmp_path, names, colours):
    """A class map as `tiler run` writes it: TILER_CLASSES tag and a colour table."""

    pred = np.zeros((1, 16, 16), np.uint8)
    pred[0, 8:] = 1
    path = write_tif(tmp_path / "tagged.tif", pred, crs=None, nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(TILER_CLASSES=",".join(names))
        ds.write_colormap(1, {i: LabelScheme(tuple(names), tuple(colours)).colormap()[i] for i in range(len(names))})
    return path


def test_a_class_file_that_contradicts_the_prediction_is_refused_naming_both(tmp_path):
    """Issue 21.1: a 3-class prediction scored with a 5-class file was mean IoU 0.03, exit 0."""
    p = _tagged_prediction(tmp_path, ["building", "road", "water"], ["#FF0000", "#00FF00", "#0000FF"])
    truth = write_tif(tmp_path / "truth.tif", np.zeros((1, 16, 16), np.uint8), crs=None)
    five = {"classes": [{"name": n, "colour": c} for n, c in
                        zip(["building", "land", "road", "vegetation", "water"],
                            ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929"])]}
    (tmp_path / "five.json").write_text(json.dumps(five))
    r = CliRunner().invoke(main, ["evaluate", p, truth, "--classes", str(tmp_path / "five.json")])
    assert r.exit_code == 2, r.output
    assert "building, land, road, vegetation, water" in r.output and "building, road, water" in r.output
    # the same classes in the file are accepted
    three = {"classes": [{"name": n, "colour": c} for n, c in
                         zip(["building", "road", "water"], ["#FF0000", "#00FF00", "#0000FF"])]}
    (tmp_path / "three.json").write_text(json.dumps(three))
    r = CliRunner().invoke(main, ["evaluate", p, truth, "--classes", str(tmp_path / "three.json")])
    assert r.exit_code == 0, r.output


def test_a_class_file_that_is_not_json_is_exit_2(tmp_path, footprints):
    p, t, _, _ = footprints
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe\x80\x81binary")
    r = CliRunner().invoke(main, ["evaluate", p, t, "--classes", str(tmp_path / "model.keras")])
    assert r.exit_code == 2, r.output
    assert "not a JSON text file" in r.output and "Traceback" not in r.output


def test_without_classes_unknown_truth_colours_ask_for_a_class_file(tmp_path):
    p = _tagged_prediction(tmp_path, ["building", "road"], ["#FF0000", "#00FF00"])
    truth = np.zeros((3, 16, 16), np.uint8)
    truth[2] = 200  # a colour that is none of the prediction's
    t = write_tif(tmp_path / "truth.tif", truth, crs=None)
    r = CliRunner().invoke(main, ["evaluate", p, t])
    assert r.exit_code == 2, r.output
    assert "pass --classes" in r.output and "add them to the class file" not in r.output


def test_evaluate_prints_table_and_json(runner, tmp_path):
    truth = np.array([[[0, 0, 1, 1], [2, 2, 255, 1]]], np.uint8)
    pred = np.array([[[0, 1, 1, 1], [2, 0, 2, 255]]], np.uint8)
    t = write_tif(tmp_path / "t.tif", truth, crs=None)
    p = write_tif(tmp_path / "p.tif", pred, crs=None, nodata=255)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": n, "colour": c} for n, c in
                                               [("a", "#FF0000"), ("b", "#00FF00"), ("c", "#0000FF")]],
                                   "ignore": [255]}))
    r = runner.invoke(main, ["evaluate", p, t, "--classes", str(classes), "--json", str(tmp_path / "s.json")])
    # One of 8 truth pixels is ignored: more than 1 %, refused unless asked for.
    assert r.exit_code == 2 and "12.5% of the truth pixels are ignored" in r.output
    assert not (tmp_path / "s.json").exists()
    r = runner.invoke(main, ["evaluate", p, t, "--classes", str(classes), "--json", str(tmp_path / "s.json"),
                             "--allow-ignored"])
    assert r.exit_code == 0, r.output
    assert "mean" in r.output and "confusion matrix" in r.output
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["iou"]["a"] == pytest.approx(1 / 3) and doc["iou"]["c"] == pytest.approx(1 / 2)
