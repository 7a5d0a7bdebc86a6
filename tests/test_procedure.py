"""The embedding procedure (weights + flip + numerics) as one recorded identity, with thresholds per procedure.

Thresholds calibrated with flip TTA in fp32 do not hold without flip or in int8, so each
procedure has its own dev-calibrated thresholds in the card, or is refused; normalisation and flip are
written once (facegnet.preprocess) and the ONNX Runtime back-end runs without PyTorch.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from facegnet.card import load_card, resolve_card
from facegnet.errors import WeightsError
from facegnet.preprocess import embed_normalised, mirror, normalise
from facegnet.recognizer import FaceRecognizer
from tests.conftest import ROOT

CARD = resolve_card(None)
pytestmark = pytest.mark.skipif(not CARD.trained, reason="no trained weights installed")


@pytest.mark.parametrize(
    "options, key",
    [({}, "flip:fp32"), ({"flip": False}, "noflip:fp32"), ({"backend": "onnx"}, "flip:fp32"),
     ({"backend": "onnx-int8"}, "flip:int8"), ({"backend": "onnx-int8", "flip": False}, "noflip:int8")],
)
def test_procedure_names_weights_flip_and_numerics_and_brings_its_thresholds(options, key):
    rec = FaceRecognizer(**options)
    assert rec.procedure == f"{CARD.fingerprint}:{key}"
    entry = CARD.thresholds[key]
    assert rec.threshold == entry["threshold"]
    # Galleries read the open-set threshold from the recogniser's card: it is this procedure's too.
    assert rec.card.open_set_threshold == entry["identify_threshold"]
    assert rec.fingerprint == CARD.fingerprint  # the weights' identity is unchanged


def test_every_procedure_of_the_shipped_card_is_dev_calibrated_and_they_differ():
    assert set(CARD.thresholds) == {"flip:fp32", "noflip:fp32", "flip:int8", "noflip:int8"}
    for entry in CARD.thresholds.values():
        assert entry["threshold_far"] == CARD.threshold_far and entry["identify_threshold_far"] == 1e-3
        assert "dev" in entry and 0.85 < entry["dev"]["accuracy"] < 1
        assert entry["identify_threshold"] > entry["threshold"]
    # The top-level fields are flip:fp32's (what facegnet.train.release writes and older readers use).
    assert CARD.thresholds["flip:fp32"]["threshold"] == CARD.threshold
    assert CARD.thresholds["flip:fp32"]["identify_threshold"] == CARD.identify_threshold
    assert len({e["threshold"] for e in CARD.thresholds.values()}) == 4


def _card_copy(tmp_path, thresholds=None):
    data = json.loads(CARD.path.read_text())
    data["weights_file"] = str(CARD.weights_path)  # absolute: the copy uses the shipped weights
    if thresholds is None:
        data.pop("thresholds", None)
    else:
        data["thresholds"] = thresholds
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(data))
    return path


def test_a_procedure_without_calibrated_thresholds_is_refused_unless_a_threshold_is_given(tmp_path):
    path = _card_copy(tmp_path, {"flip:fp32": CARD.thresholds["flip:fp32"]})
    assert FaceRecognizer(path).threshold == CARD.threshold
    with pytest.raises(WeightsError, match="noflip:fp32.*calibrated: flip:fp32"):
        FaceRecognizer(path, flip=False)
    with pytest.raises(WeightsError, match="flip:int8"):
        FaceRecognizer(path, backend="onnx-int8")
    rec = FaceRecognizer(path, flip=False, threshold=0.5)  # the user's own threshold is their call
    assert rec.threshold == 0.5 and rec.threshold_given and rec.procedure.endswith(":noflip:fp32")


def test_an_older_card_without_per_procedure_thresholds_holds_only_flip_fp32(tmp_path):
    card = load_card(_card_copy(tmp_path))
    assert card.calibrated_procedures() == ["flip:fp32"]
    assert card.for_procedure(True, "fp32").threshold == CARD.threshold
    with pytest.raises(WeightsError, match="noflip:fp32"):
        card.for_procedure(False, "fp32")


def test_cli_refuses_an_uncalibrated_procedure_in_one_line(tmp_path, capsys):
    from facegnet.cli import main

    path = _card_copy(tmp_path, {"flip:fp32": CARD.thresholds["flip:fp32"]})
    photo = ROOT / "facegnet" / "assets" / "colin_powell_1.jpg"
    code = main(["verify", str(photo), str(photo), "--weights", str(path), "--no-flip"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "noflip:fp32" in err[0]


def test_normalisation_and_flip_are_one_rule_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    as_numpy = normalise(crops, (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    as_torch = normalise(torch.from_numpy(crops), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    assert as_numpy.dtype == np.float32 and as_numpy.shape == (3, 3, 112, 112)
    assert np.allclose(as_numpy, as_torch.numpy(), atol=1e-6)
    expected = (crops[1, 5, 7, 2] / 255 - 0.3) / 0.5
    assert abs(as_numpy[1, 2, 5, 7] - expected) < 1e-5
    assert np.array_equal(mirror(as_numpy)[..., 0], as_numpy[..., -1])

    weights = rng.normal(size=(3 * 112 * 112, 8)).astype(np.float32)
    calls = []

    def run(batch):  # a stand-in network: one call per batch, recorded
        calls.append(len(batch))
        return batch.reshape(len(batch), -1) @ weights

    flipped = embed_normalised(run, as_numpy, flip=True)
    raw = run(as_numpy) + run(mirror(as_numpy))
    assert calls[0] == 6  # crops and mirrors in one pass
    assert np.allclose(flipped, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    assert np.allclose(np.linalg.norm(embed_normalised(run, as_numpy, flip=False), axis=1), 1, atol=1e-6)
    # Flip TTA is mirror-invariant: a mirrored crop gets the same embedding.
    assert np.allclose(embed_normalised(run, mirror(as_numpy), flip=True), flipped, atol=1e-4)


def test_onnx_backend_imports_and_runs_without_torch(tmp_path):
    """onnx_backend must load neither torch nor facegnet.deploy.exporter (which imports torch): no import circle."""
    from facegnet.deploy.exporter import export_onnx

    path = export_onnx(None, tmp_path / "net.onnx")
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'facenet_pytorch'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from facegnet.deploy.onnx_embedder import OnnxEmbedder\n"
        "e = OnnxEmbedder.from_export(sys.argv[1], threads=1)\n"
        "out = e(np.full((2, 112, 112, 3), 128, np.uint8))\n"
        "print(out.shape, e.numerics, 'facegnet.deploy.exporter' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["(2,", "512)", "fp32", "False"]
