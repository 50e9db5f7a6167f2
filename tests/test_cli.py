"""vit-run and vit-convert: output, JSON, the backend comparison, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from polyvit.cli import convert as convert_cli
from polyvit.cli import run as run_cli
from polyvit.config import get_config
from polyvit.weights import random_weights, save

from scripts import assert_one_line_error, run

CFG = get_config("vit_test")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save(path, CFG, random_weights(CFG, seed=5))
    return str(path)


def test_vit_run_default_runs_the_built_in_model_on_the_sample_image():
    """The README's main job: no arguments at all."""
    done = run("vit-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sample.jpg"
    assert len([ln for ln in lines if ln.strip()[:2].rstrip(".").isdigit()]) == 5  # top-5
    assert "ms/image" in done.stdout and "backend torch" in done.stdout
    assert "untrained" in done.stderr and "--weights" in done.stderr


def test_vit_run_top_k_labels_and_probabilities(capsys, images, tiny_weights):
    assert run_cli.main([*images, "--weights", tiny_weights, "--topk", "3",
                         "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.startswith("img")] == \
        ["img0.png", "img1.png", "img2.png"]
    probs = [float(ln.split("%")[0].split(".", 1)[1]) for ln in out.splitlines()
             if "%" in ln]
    assert len(probs) == 9
    assert "3 image(s), batch size 2" in out


def test_vit_run_json_matches_the_model(capsys, images, tiny_weights):
    import polyvit

    assert run_cli.main([images[0], "--weights", tiny_weights, "--json", "--topk", "10"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "torch" and doc["precision"] == "fp32" and doc["images"] == 1
    top = doc["results"][0]["topk"]
    model = polyvit.load(tiny_weights)
    logits = model(polyvit.preprocess(images[0], model.config)[None])[0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [e["index"] for e in top] == list(np.argsort(-probs)[:10])
    np.testing.assert_allclose([e["probability"] for e in top], np.sort(probs)[::-1][:10],
                               rtol=1e-5)
    assert sum(e["probability"] for e in top) == pytest.approx(1.0, abs=1e-5)  # 10 classes


def test_vit_run_five_crop(capsys, images, tiny_weights):
    assert run_cli.main([images[0], "--weights", tiny_weights, "--five-crop", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["crops"] == "five" and len(doc["results"]) == 1


def test_vit_run_all_backends_compares_against_the_reference(capsys, images, tiny_weights):
    assert run_cli.main([*images, "--weights", tiny_weights, "--backend", "all", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["backend"]: r for r in doc["backends"]}
    import polyvit

    for name, (ok, _) in polyvit.available_backends().items():
        if ok:
            assert rows[name]["parity"] == "pass"
            assert rows[name]["max_abs_error"] <= rows[name]["tolerance"]
            assert rows[name]["top1_agreement"] == 1.0
    assert run_cli.main([*images, "--weights", tiny_weights, "--backend", "all"]) == 0
    table = capsys.readouterr().out
    assert "max|dlogit|" in table and "torch" in table


def test_vit_run_reports_a_bad_image_and_still_classifies_the_rest(capsys, images, tmp_path,
                                                                   tiny_weights):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert run_cli.main([images[0], str(bad), images[1], "--weights", tiny_weights]) == 1
    captured = capsys.readouterr()
    assert "img0.png" in captured.out and "img1.png" in captured.out
    assert "bad.jpg: not an image" in captured.err


@pytest.mark.parametrize("argv,message", [
    (["--weights", "/nonexistent/w.safetensors"], "no such file"),
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--precision", "int3", "--config", "vit_test"], "precision 'int3'"),
    (["/nonexistent.png", "--config", "vit_test"], "no such file"),
])
def test_vit_run_errors_are_one_line_without_traceback(argv, message):
    assert_one_line_error("vit-run", argv, message)


def test_vit_run_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli.main(["--topk", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_vit_convert_round_trip(tmp_path, capsys):
    src = tmp_path / "timm.pth"
    weights = random_weights(get_config("vit_small_patch32_224"), seed=7)
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, src)
    dst = tmp_path / "out.safetensors"
    assert convert_cli.main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "vit_small_patch32_224 from a timm checkpoint" in out and "22,878,952 parameters" in out
    import polyvit

    assert polyvit.import_checkpoint(dst)[2] == "polyvit"


def test_vit_convert_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    done = run("vit-convert", str(bad), str(tmp_path / "o.safetensors"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("vit-convert: error:")
    assert not (tmp_path / "o.safetensors").exists()
