"""Patches per second of a model under each inference runtime on this machine, and their agreement.

Runtimes measured, each on the same random batches of real-sized patches:

- ``keras``: Keras ``predict_on_batch`` on the active backend (TensorFlow here), what
  tiler runs today;
- ``keras-xla``: the same with ``jit_compile=True`` (XLA; TensorFlow backend);
- ``onnxruntime``: the model exported to ONNX (``keras.Model.export(format="onnx")``)
  and run by ONNX Runtime's CPU provider;
- ``openvino``: that ONNX file compiled by OpenVINO for the CPU.

Each runtime is warmed up (first call: tracing, compilation), then timed over
``--repeat`` batches; the table gives patches/s, megapixels of patch per second,
the speed-up against ``keras`` and the largest absolute difference of its
probabilities from ``keras``'s (the equivalence bar is 1e-4). A runtime whose
package is missing is reported as such, not skipped silently.

Usage::

    python benchmarks/runtimes.py [--model FILE] [--patch 384] [--batch 8] [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _timing import stamp  # benchmarks/_timing.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--patch", type=int, default=384)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)

    import keras
    import numpy as np

    from tiler.model import load_model
    from tiler.model._predictor import _normalising_model

    tm = load_model(args.model)
    net = _normalising_model(tm.keras_model, np.asarray(tm.info.offset, np.float32),
                             (1.0 / np.asarray(tm.info.scale, np.float64)).astype(np.float32))
    rng = np.random.default_rng(0)
    shape = (args.batch, args.patch, args.patch, len(tm.info.channels))
    batches = [rng.uniform(0, 255, shape).astype(np.float32) for _ in range(args.repeat)]
    net(batches[0])  # builds the normalising wrapper (export needs built layers)
    runtimes = {}

    runtimes["keras"] = lambda x: np.asarray(net.predict_on_batch(x))

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xla = tf.function(lambda x: net(x, training=False), jit_compile=True)
        runtimes["keras-xla"] = lambda x: xla(x).numpy()

    tmp = tempfile.mkdtemp()
    onnx_path = os.path.join(tmp, "model.onnx")
    export_error = None
    try:
        spec = keras.InputSpec(shape=(args.batch, args.patch, args.patch, shape[-1]), dtype="float32")
        net.export(onnx_path, format="onnx", input_signature=[spec], verbose=False)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        export_error = f"ONNX export failed: {type(exc).__name__}: {str(exc)[:80]}"
    try:
        import onnxruntime as ort

        if export_error:
            raise RuntimeError(export_error)
        opts = ort.SessionOptions()
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        runtimes["onnxruntime"] = lambda x: session.run(None, {feed: x})[0]
    except Exception as exc:  # noqa: BLE001
        runtimes["onnxruntime"] = f"unavailable ({type(exc).__name__}: {str(exc)[:80]})"
    try:
        from tiler.model._runtime import import_openvino

        ov = import_openvino()

        if export_error:
            raise RuntimeError(export_error)
        compiled = ov.Core().compile_model(ov.convert_model(onnx_path), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"})
        runtimes["openvino"] = lambda x: compiled(x)[0]
        compiled_bf16 = ov.Core().compile_model(ov.convert_model(onnx_path), "CPU")
        runtimes["openvino (its default precision)"] = lambda x: compiled_bf16(x)[0]
    except Exception as exc:  # noqa: BLE001
        runtimes["openvino"] = f"unavailable ({type(exc).__name__}: {str(exc)[:80]})"

    print(f"model {args.model or 'bundled'}; batch {args.batch} x {args.patch}^2 x {shape[-1]} channels; "
          f"{args.repeat} batches; backend {keras.backend.backend()}; {os.cpu_count()} CPUs")
    print()
    print("| runtime | patches/s | patch Mpx/s | speed-up vs keras | max abs diff vs keras |")
    print("|---|---:|---:|---:|---:|")
    reference = [runtimes["keras"](b) for b in batches[:2]]
    base = None
    for name, fn in runtimes.items():
        if isinstance(fn, str):
            print(f"| {name} | {fn} | | | |")
            continue
        out = [np.asarray(fn(b), np.float32) for b in batches[:2]]  # warm-up and agreement
        diff = max(float(np.abs(o - r).max()) for o, r in zip(out, reference))
        t = time.perf_counter()
        for b in batches:
            fn(b)
        seconds = time.perf_counter() - t
        rate = len(batches) * args.batch / seconds
        base = base or rate
        print(f"| {name} | {rate:.1f} | {rate * args.patch ** 2 / 1e6:.2f} | {rate / base:.2f}x | {diff:.1e} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
