"""ONNX models on this CPU: patches per second of each runtime, and whole-scene seconds of the cloud mask.

Rows, measured in this one process one after the other:

* the bundled model as ``.keras`` under Keras (TensorFlow) and OpenVINO, and exported
  with ``tiler export`` as ONNX under OpenVINO and ONNX Runtime: patches per second of
  its recommended patch, batch 8, through ``tiler.model.Predictor`` (the network and its
  normalisation; after one untimed batch);
* the cloud mask ``clouds-s2-l1c-6b`` (ukis-csmask, 256 px, 6 bands) under OpenVINO and
  ONNX Runtime, the same way;
* ``tiler run`` of ``clouds-s2-l1c-6b`` on the shared Sentinel-2 scene at 20 m: whole
  ``run_scene`` seconds per runtime.

Usage::

    python benchmarks/onnx_models.py [--seconds 8]

Needs ``tf2onnx`` (export), ``onnxruntime``, ``ukis-csmask`` and ``../shared/data`` for
the last rows (skipped without them).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

from _timing import stamp  # benchmarks/_timing.py

ROOT = Path(__file__).resolve().parents[1]
S2 = ROOT.parent / "shared" / "data" / "sentinel2_18SVG_20160112"


def rate(model, runtime: str, seconds: float) -> float:
    import numpy as np

    from tiler.model import Predictor, load_model

    tm = load_model(model, lazy=True)
    patch = tm.info.recommended()[0]
    x = np.random.default_rng(0).uniform(0, 1, (8, len(tm.info.channels), patch, patch)).astype(np.float32)
    x *= np.asarray(tm.info.scale, np.float32)[None, :, None, None]
    x += np.asarray(tm.info.offset, np.float32)[None, :, None, None]
    pred = Predictor(tm, batch_size=8, runtime=runtime)
    pred(x)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        pred(x)
        n += 8
    return n / (time.perf_counter() - t), patch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    from tiler.model import DEFAULT_MODEL_PATH
    from tiler.model._registry import available_models

    ort = importlib.util.find_spec("onnxruntime") is not None
    print(f"cpus={os.cpu_count()}; patches per second, batch 8, the model's recommended patch")
    print()
    print("| model | file | runtime | patch px | patches/s |")
    print("|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("bundled", str(DEFAULT_MODEL_PATH), "keras"), ("bundled", str(DEFAULT_MODEL_PATH), "openvino")]
        if importlib.util.find_spec("tf2onnx") is not None:
            from tiler.model._export import export_onnx

            onnx_path = os.path.join(tmp, "default.onnx")
            export_onnx(DEFAULT_MODEL_PATH, onnx_path)
            rows += [("bundled", onnx_path, "openvino")] + ([("bundled", onnx_path, "onnxruntime")] if ort else [])
        clouds = available_models().get("clouds-s2-l1c-6b")
        if clouds is not None:
            rows += [("clouds-s2-l1c-6b", clouds.path, "openvino")] + (
                [("clouds-s2-l1c-6b", clouds.path, "onnxruntime")] if ort else [])
        for name, path, runtime in rows:
            r, patch = rate(path, runtime, args.seconds)
            print(f"| {name} | {Path(path).suffix} | {runtime} | {patch} | {r:.1f} |", flush=True)
        if clouds is not None and S2.exists():
            from tiler import run_scene

            print()
            print("| `tiler run` of clouds-s2-l1c-6b on the Sentinel-2 scene (967 x 973 px at 20 m) | runtime | "
                  "run_scene s |")
            print("|---|---|---:|")
            for runtime in ["openvino"] + (["onnxruntime"] if ort else []):
                rep = run_scene(str(S2), os.path.join(tmp, f"c_{runtime}.tif"), model=clouds.path,
                                reference="20m", runtime=runtime, overwrite=True)
                print(f"| clouds-s2-l1c-6b | {runtime} | {rep.seconds['total']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
