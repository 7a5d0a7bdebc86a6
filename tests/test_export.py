"""Deployment: ONNX / TorchScript exports, the ONNX Runtime back-end, int8, and `facegnet export`.

The exports are of the active weights (the trained model when installed, else the untrained network); the
faces are real LFW photos, detected and aligned by the FaceRecognizer. int8 is calibrated on training-pack crops.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import onnx
import pytest
import torch

from facegnet.cli import main
from facegnet.deploy.exporter import (
    CALIBRATION_COUNT,
    ExportError,
    cached_onnx,
    cached_onnx_path,
    calibration_crops,
    export_onnx,
    export_torchscript,
    shipped_ranges,
    write_int8_ranges,
)
from facegnet.deploy.onnx_embedder import OnnxEmbedder, make_session
from facegnet.recognizer import FaceRecognizer
from tests.conftest import LFW_IMAGES, ROOT, SHARED

PACK = SHARED / "data" / "train"


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Every cached export of this module goes to a fresh folder, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEGNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def lfw_crops(recognizer) -> np.ndarray:
    """Aligned crops of the largest face of 20 LFW photos of different people."""
    people = sorted(p for p in LFW_IMAGES.iterdir() if p.is_dir())[::200] if LFW_IMAGES.is_dir() else []
    photos = [next(iter(sorted(p.glob("*.jpg")))) for p in people][:20]
    if len(photos) < 20:
        pytest.skip("LFW photos not available")
    crops = []
    for photo, faces in zip(photos, recognizer.detect_batch(photos)):
        if faces:
            crops.append(recognizer.align(photo, faces[:1])[0])
    assert len(crops) >= 18
    return np.stack(crops)


@pytest.fixture(scope="module")
def torch_recognizer() -> FaceRecognizer:
    return FaceRecognizer(backend="torch")


@pytest.fixture(scope="module")
def torch_embeddings(torch_recognizer, lfw_crops) -> np.ndarray:
    return torch_recognizer.embed_crops(lfw_crops)


@pytest.fixture(scope="module")
def onnx_path():
    return cached_onnx()  # the active card's weights, exported into the private cache




def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_export_is_checked_has_a_dynamic_batch_and_a_card(onnx_path, recognizer, lfw_crops):
    onnx.checker.check_model(str(onnx_path), full_check=True)
    graph = onnx.load(str(onnx_path)).graph
    assert not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")  # symbolic batch axis
    session = make_session(onnx_path, threads=1)
    from facegnet.deploy.exporter import preprocess

    batch = preprocess(np.concatenate([lfw_crops, lfw_crops])[:7], recognizer.card)
    for n in (1, 7):
        out = session.run(None, {"input": batch[:n]})[0]
        assert out.shape == (n, 512) and out.dtype == np.float32
    seven = session.run(None, {"input": batch})[0]
    one = session.run(None, {"input": batch[3:4]})[0]
    assert np.allclose(seven[3], one[0], atol=1e-4)  # batching changes nothing
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["format"] == "onnx" and card["opset"] == 17 and card["int8"] is False
    from facegnet.card import sha256_file

    assert card["file_sha256"] == sha256_file(onnx_path)
    assert card["source_sha256"] == card["sha256"] == recognizer.card.fingerprint
    assert card["mean"] == list(recognizer.card.mean) and card["threshold"] == recognizer.card.threshold


def test_onnx_backend_agrees_with_pytorch_on_lfw_faces(onnx_path, recognizer, lfw_crops, torch_embeddings):
    onnx_embedder = OnnxEmbedder(recognizer.card, model=onnx_path, threads=1)
    got = onnx_embedder(lfw_crops)
    assert got.shape == torch_embeddings.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert cosines(got, torch_embeddings).min() >= 0.9999
    # Same contract as Embedder: one crop (H, W, 3) works, flip TTA is mirror-invariant, wrong shapes refused.
    assert np.allclose(onnx_embedder(lfw_crops[0]), got[:1], atol=1e-5)
    assert np.allclose(onnx_embedder(lfw_crops[:3, :, ::-1]), got[:3], atol=1e-5)
    no_flip = OnnxEmbedder(recognizer.card, model=onnx_path, flip=False, batch_size=4, threads=1)(lfw_crops)
    assert cosines(no_flip, got).min() < 0.99999  # the flip really is part of the result
    with pytest.raises(ValueError, match="112, 112, 3"):
        onnx_embedder(lfw_crops[:, :100])


def test_recognizer_onnx_backend_uses_the_cached_export(onnx_path, lfw_crops, torch_embeddings):
    assert FaceRecognizer().backend == "onnx"  # the default on a CPU
    assert FaceRecognizer(device="cpu", backend="torch").backend == "torch"
    onnx_rec = FaceRecognizer(backend="onnx")
    assert isinstance(onnx_rec.embedder, OnnxEmbedder) and onnx_rec.embedder.path == onnx_path
    mtime = onnx_path.stat().st_mtime_ns
    assert cosines(onnx_rec.embed_crops(lfw_crops), torch_embeddings).min() >= 0.9999
    assert FaceRecognizer(backend="onnx").embedder.path == onnx_path
    assert onnx_path.stat().st_mtime_ns == mtime  # reused, not exported again
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])  # a truncated cache file is noticed and remade
    assert cached_onnx() == onnx_path and onnx_path.stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="backend"):
        FaceRecognizer(backend="tensorrt")


def test_torchscript_equals_eager(tmp_path, torch_recognizer, recognizer, lfw_crops):
    from facegnet.deploy.exporter import preprocess

    path = export_torchscript(None, tmp_path / "net.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
        loaded = torch.jit.load(str(path))
    eager = torch_recognizer.embedder.model  # the same weights, in eval mode
    for n in (1, 7):
        batch = torch.from_numpy(preprocess(np.concatenate([lfw_crops, lfw_crops])[:n], recognizer.card))
        with torch.inference_mode():
            assert torch.allclose(loaded(batch), eager(batch), atol=1e-5, rtol=1e-5)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["format"] == "torchscript" and card["int8"] is False


@pytest.fixture(scope="module")
def int8_path(onnx_path):
    """The cached int8 export, quantized with the activation ranges shipped beside the weights (no pack)."""
    return cached_onnx(int8=True)


def test_int8_export_from_shipped_ranges_runs_and_stays_close(int8_path, recognizer, lfw_crops, torch_embeddings,
                                                              monkeypatch):
    monkeypatch.delenv("FACEGNET_CALIBRATION", raising=False)
    if not recognizer.card.trained:
        pytest.skip("no trained weights: no shipped int8 ranges")
    onnx.checker.check_model(str(int8_path), full_check=True)
    card = json.loads(int8_path.with_suffix(".json").read_text())
    assert card["int8"] is True and card["export"]["int8_calibration"] == "shipped"
    assert "shipped with the weights" in card["export"]["quantization"]["calibration"]
    assert int8_path.stat().st_size < 0.4 * cached_onnx_path(recognizer.card).stat().st_size
    embedder = OnnxEmbedder(recognizer.card, model=int8_path, threads=1)
    assert embedder.numerics == "int8"
    got = embedder(lfw_crops)
    cos = cosines(got, torch_embeddings)
    print(f"\nint8 vs PyTorch fp32 on {len(cos)} LFW faces: cosine mean {cos.mean():.4f}, min {cos.min():.4f}")
    assert cos.mean() >= 0.97 and cos.min() >= 0.9


@pytest.mark.slow
def test_shipped_int8_ranges_are_those_of_the_training_pack(tmp_path, int8_path, recognizer, lfw_crops):
    """The shipped ranges are what calibrating on the pack's crops measures, and quantize to the same int8 model.

    Re-measured ranges agree to float rounding only (about 1e-6 relative: another CPU sums in another order), and
    one rounding step of a scale can flip an int8 activation, so the two int8 models agree closely, not bit for bit.
    """
    if not PACK.is_dir() or shipped_ranges(recognizer.card) is None:
        pytest.skip("training pack or shipped ranges not available")
    crops = calibration_crops(PACK, CALIBRATION_COUNT, recognizer.card.input_size)
    shipped_data = json.loads(shipped_ranges(recognizer.card).read_text())["data"]
    measured_data = json.loads(write_int8_ranges(recognizer.card, crops, tmp_path / "ranges.json").read_text())["data"]
    assert set(measured_data) == set(shipped_data)
    for name, ranges in shipped_data.items():
        for end in ("lowest", "highest"):
            assert measured_data[name][end]["data"][0] == pytest.approx(ranges[end]["data"][0], rel=1e-5, abs=1e-6), \
                (name, end)

    path = export_onnx(None, tmp_path / "net-int8.onnx", int8=True, calibration=crops)
    custom = OnnxEmbedder(recognizer.card, model=path, threads=1)
    assert custom.numerics == "int8-custom"  # other calibration data: not the procedure the card calibrated
    shipped = OnnxEmbedder(recognizer.card, model=int8_path, threads=1)
    cos = cosines(custom(lfw_crops), shipped(lfw_crops))
    print(f"\nint8 from re-measured vs shipped ranges on {len(cos)} LFW faces: cosine min {cos.min():.5f}")
    assert cos.min() >= 0.99


def test_int8_ranges_of_another_graph_are_refused(tmp_path, onnx_path, recognizer):
    from facegnet.deploy.exporter import _quantize_file

    bad = tmp_path / "ranges.json"
    bad.write_text(json.dumps({"calibration_method": "MinMax", "data": {"no_such_tensor": {"lowest": 0, "highest": 1}}}))
    with pytest.raises(ExportError, match="do not fit this export"):
        _quantize_file(onnx_path, tmp_path / "x.onnx", recognizer.card, bad)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_int8_backend_works_from_a_wheel_without_the_training_pack(tmp_path):
    """An installed user (wheel contents only, no ../shared, empty cache) runs --backend onnx-int8."""
    import subprocess
    import sys
    import zipfile

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True)
    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("facegnet-*.whl"))) as wheel:
        wheel.extractall(site)  # a pure-Python wheel installs by unpacking
    script = (
        "import sys, facegnet; assert facegnet.__file__.startswith(sys.argv[1]), facegnet.__file__\n"
        "from facegnet import FaceRecognizer\n"
        "from pathlib import Path\n"
        "rec = FaceRecognizer(backend='onnx-int8')\n"
        "assets = Path(facegnet.__file__).parent / 'assets'\n"
        "same = rec.verify(assets / 'colin_powell_1.jpg', assets / 'colin_powell_2.jpg')\n"
        "diff = rec.verify(assets / 'colin_powell_1.jpg', assets / 'serena_williams_1.jpg')\n"
        "print(rec.procedure, rec.threshold, same.same, diff.same)\n"
    )
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("FACEGNET_CACHE", "FACEGNET_CALIBRATION", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", script, str(site)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    procedure, threshold, same, diff = run.stdout.split()
    assert procedure.endswith(":flip:int8") and (same, diff) == ("True", "False")
    card = json.loads((site / "facegnet" / "weights" / "facegnet-default.json").read_text())
    assert float(threshold) == card["thresholds"]["flip:int8"]["threshold"]
    assert list((home / ".cache" / "facegnet" / "onnx").glob("*-int8-*.onnx"))  # made on first use, cached


def test_calibration_refuses_lfw():
    if not LFW_IMAGES.is_dir():
        pytest.skip("LFW not available")
    from facegnet.errors import DataError

    with pytest.raises(DataError, match="LFW is for evaluation only"):
        calibration_crops(LFW_IMAGES.parent, count=4)


def test_cli_export_writes_the_model_and_its_card(tmp_path, capsys, recognizer):
    out = tmp_path / "deploy" / "face.onnx"  # the folder is created
    assert main(["export", "--format", "onnx", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    card = json.loads((tmp_path / "deploy" / "face.json").read_text())
    assert card["format"] == "onnx" and card["source_sha256"] == recognizer.card.fingerprint
    assert make_session(out, threads=1).get_inputs()[0].shape[0] == "batch"


def test_cli_bad_out_path_gives_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder\n")
    (tmp_path / "mine.json").write_text('{"name": "my-weights"}\n')  # a source card: never overwritten
    cases = [
        (["export", str(blocker / "face.onnx")], "is a file, not a folder"),
        (["export", str(tmp_path)], "is a folder"),
        (["export", str(tmp_path / "face.json")], "must end in .onnx"),
        (["export", "--format", "torchscript", "--int8", str(tmp_path / "face.pt")], "only apply to --format onnx"),
        (["export", "--format", "torchscript", str(tmp_path / "mine.pt")], "mine.json beside it is not the card"),
    ]
    for argv, reason in cases:
        assert main(argv) == ExportError.exit_code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0] and err[0].startswith("facegnet: error: ")
    assert sorted(os.listdir(tmp_path)) == ["mine.json", "notes.txt"]  # nothing written, nothing half-written


def test_int8_ranges_measured_on_other_weights_are_not_used(tmp_path, recognizer):
    """New weights shipped under the same name must not be quantized with the old weights' ranges."""
    import shutil

    from facegnet.card import load_card
    from facegnet.errors import DataError

    source = shipped_ranges(recognizer.card)
    if source is None:
        pytest.skip("no shipped int8 ranges")
    data = json.loads(recognizer.card.path.read_text())
    data["weights_file"] = "w.pt"
    data["sha256"] = "0" * 64  # other weights, same file names
    (tmp_path / "w.json").write_text(json.dumps(data))
    (tmp_path / "w.pt").write_bytes(b"stand-in")
    shutil.copy(source, tmp_path / "w.int8-ranges.json")
    other = load_card(tmp_path / "w.json")
    assert shipped_ranges(other) is None
    with pytest.raises(DataError, match="no int8 activation ranges ship"):
        cached_onnx(other, int8=True)
