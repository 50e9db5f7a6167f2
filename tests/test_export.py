"""vit-export: ONNX, TorchScript and torch.export programs of the reference, checked before
they are written; here checked again, independently, against the float64 reference."""

from __future__ import annotations

import os

import numpy as np
import pytest

from polyvit import parity
from polyvit.config import get_config
from polyvit.export import ExportError, export
from polyvit.weights import random_weights, save

from scripts import assert_one_line_error, run

CFG = get_config("vit_test")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save(path, CFG, random_weights(CFG, seed=11))
    return str(path)


def assert_matches_reference(run_model, batch: int, seed: int = 7) -> None:
    images = parity.random_images(CFG, batch, seed=seed)
    oracle, tol = parity.reference_outputs(CFG, random_weights(CFG, seed=11), images)
    result = parity.compare(run_model(images), oracle, tol)
    assert result.passed, result.describe()


def test_onnx_with_a_dynamic_batch_matches_the_reference_at_any_batch(weights, tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (polyvit[bench])")
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is in polyvit[bench]")
    out = tmp_path / "vit.onnx"
    report = export(weights, str(out), "onnx", dynamic_batch=True)
    assert report.batches == (1, 3) and report.max_abs_error <= report.tolerance
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (2, 5):
        assert_matches_reference(lambda x: session.run(None, {"images": x})[0], batch)


def test_torchscript_and_exported_program_match_the_reference(weights, tmp_path):
    import torch

    export(weights, str(tmp_path / "vit.pt"), "torchscript")
    scripted = torch.jit.load(str(tmp_path / "vit.pt"))
    assert_matches_reference(lambda x: scripted(torch.from_numpy(x)).numpy(), 1)
    export(weights, str(tmp_path / "vit.pt2"), "exported-program", dynamic_batch=True)
    program = torch.export.load(str(tmp_path / "vit.pt2")).module()
    assert_matches_reference(lambda x: program(torch.from_numpy(x)).numpy(), 4)


def test_vit_export_picks_the_format_from_the_extension_and_reports_the_check(weights, tmp_path):
    done = run("vit-export", weights, str(tmp_path / "vit.onnx"), "--opset", "18")
    assert done.returncode == 0, done.stderr
    assert "(onnx, opset 18)" in done.stdout and "within the fp32 bound" in done.stdout


@pytest.mark.parametrize("argv,message", [
    (["{w}", "{tmp}/vit.onnx", "--opset", "7"], "cannot export opset 7"),
    (["{w}", "{tmp}/no/such/vit.onnx"], "does not exist"),
    (["{w}", "{tmp}/vit.bin"], "cannot tell the format"),
    (["{w}", "{tmp}/vit.pt", "--dynamic-batch"], "TorchScript tracing fixes the batch size"),
    (["{w}", "{tmp}/vit.pt", "--opset", "17"], "ONNX exports only"),
], ids=["unsupported_opset", "missing_folder", "unknown_extension", "dynamic_torchscript",
        "opset_without_onnx"])
def test_bad_export_requests_are_one_line_errors_and_write_nothing(weights, tmp_path, argv,
                                                                  message):
    argv = [a.format(w=weights, tmp=tmp_path) for a in argv]
    assert_one_line_error("vit-export", argv, message)
    assert os.listdir(tmp_path) == []


def test_an_export_that_fails_its_check_writes_nothing(weights, tmp_path, monkeypatch):
    """A broken exporter (here: one whose model adds 1 to every logit) is caught by the check."""
    import polyvit.export as ex

    real = ex._EXPORTERS["torchscript"]

    def off_by_one(*args):
        runner = real(*args)
        return lambda images: runner(images) + np.float32(1.0)

    monkeypatch.setitem(ex._EXPORTERS, "torchscript", off_by_one)
    with pytest.raises(ExportError, match="failed its check at batch 1"):
        export(weights, str(tmp_path / "vit.pt"), "torchscript")
    assert os.listdir(tmp_path) == []


def test_an_export_at_another_image_size_matches_the_resampled_reference(weights, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is in polyvit[bench]")
    from polyvit.resize import at_image_size
    from polyvit.weights import load

    report = export(weights, str(tmp_path / "vit48.onnx"), "onnx", image_size=48,
                    dynamic_batch=True)
    assert report.batches == (1, 3)
    cfg, tensors = at_image_size(*load(weights)[:2], 48)
    session = ort.InferenceSession(str(tmp_path / "vit48.onnx"), providers=["CPUExecutionProvider"])
    images = parity.random_images(cfg, 2, seed=3)
    oracle, tol = parity.reference_outputs(cfg, tensors, images)
    result = parity.compare(session.run(None, {"images": images})[0], oracle, tol)
    assert result.passed, result.describe()
