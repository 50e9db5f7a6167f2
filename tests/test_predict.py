"""vit-predict and polyvit.predict on the local engine: inputs, rows, formats, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import polyvit
from polyvit.cli import predict as predict_cli
from polyvit.config import get_config
from polyvit.inference import expand_inputs, read_rows
from polyvit.inference.output import FORMATS
from polyvit.weights import random_weights, save

from scripts import assert_one_line_error, run, script

CFG = get_config("vit_test")
BROKEN = ("empty.jpg", "not_an_image.png", "truncated.jpg", "bomb.png")


def png_claiming(width: int, height: int) -> bytes:
    from test_bad_input import png_claiming as claim
    return claim(width, height)


def write_photo(path, seed: int, size=(96, 72)) -> str:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    # smooth-ish content: a small random image scaled up, so JPEG draft decoding has work to do
    Image.fromarray(a).resize(size, Image.Resampling.BILINEAR).save(path, quality=90)
    return str(path)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save(path, CFG, random_weights(CFG, seed=7))
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six good photos (two in a subfolder, one PNG) and the four kinds of broken file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i in range(5):
        write_photo(root / ("sub" if i % 3 == 0 else ".") / f"photo{i}.jpg", i, (96 + 8 * i, 72))
    Image.fromarray(np.full((50, 40, 3), 200, np.uint8)).save(root / "sub" / "flat.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "not_an_image.png").write_text("just text")
    whole = (root / "photo1.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "bomb.png").write_bytes(png_claiming(12_000, 10_000))
    (root / "notes.txt").write_text("not listed: a folder walk takes image files only")
    return root


def predict(*argv: str) -> int:
    return predict_cli.main([*argv, "--quiet"])


def expected_rows(paths, weights, topk=5, backend="cpp", precision="fp32"):
    """The oracle: polyvit.load called directly on the arrays polyvit.preprocess gives."""
    model = polyvit.load(weights, backend=backend, precision=precision)
    out = []
    for p in paths:
        try:
            x = polyvit.preprocess(p, model.config, draft=True)
        except polyvit.ImageError:
            out.append(None)
            continue
        logits = model(x[None])[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        out.append(probs)
    return out


def assert_rows_match(rows, paths, oracle, topk):
    assert [r["path"] for r in rows] == paths
    for row, probs in zip(rows, oracle):
        if probs is None:
            assert row["error"] and row["topk_indices"] == [] and row["topk_probs"] == []
            continue
        assert row["error"] == ""
        top = np.argsort(-probs, kind="stable")[:topk]
        assert row["topk_indices"] == top.tolist()
        np.testing.assert_allclose(row["topk_probs"], probs[top], rtol=0, atol=1e-6)
        names = polyvit.labels.class_names(CFG.num_classes)
        assert row["topk_labels"] == [names[i] for i in top]


# ---- inputs ----------------------------------------------------------------------------------------

def test_a_folder_is_walked_recursively_in_sorted_order_taking_image_files_only(folder):
    paths = expand_inputs([str(folder)])
    names = [os.path.relpath(p, folder) for p in paths]
    assert names == sorted(names, key=lambda n: n.split(os.sep)) and "notes.txt" not in names
    assert set(names) == {"bomb.png", "empty.jpg", "not_an_image.png", "photo1.jpg", "photo2.jpg",
                          "photo4.jpg", "truncated.jpg", "sub/photo0.jpg", "sub/photo3.jpg",
                          "sub/flat.png"}


def test_each_input_kind_and_duplicates_keep_their_listing(folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos to look at\n\n{folder}/photo1.jpg\n   \n{folder}/missing.jpg\n"
                       f"{folder}/photo1.jpg\n")
    rel = tmp_path / "rel"
    rel.mkdir()
    (rel / "a.jpg").write_bytes((folder / "photo2.jpg").read_bytes())
    (rel / "names.lst").write_text("a.jpg\n")
    got = expand_inputs([str(folder / "photo4.jpg"), str(folder / "sub"), f"{folder}/photo[12].jpg",
                         str(listing), str(rel / "names.lst")])
    assert got == [str(folder / "photo4.jpg"), str(folder / "sub" / "flat.png"),
                   str(folder / "sub" / "photo0.jpg"), str(folder / "sub" / "photo3.jpg"),
                   str(folder / "photo1.jpg"), str(folder / "photo2.jpg"),
                   str(folder / "photo1.jpg"), str(folder / "missing.jpg"),
                   str(folder / "photo1.jpg"), str(rel / "a.jpg")]


def test_a_symlink_loop_is_entered_once_and_reported(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_photo(tmp_path / "a" / "b" / "x.jpg", 1)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    skipped: list[str] = []
    assert expand_inputs([str(tmp_path)], skipped) == [str(tmp_path / "a" / "b" / "x.jpg")]
    assert len(skipped) == 1 and "loop" in skipped[0]


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir() or str(p), "no images found"),
    (lambda p: str(p / "nowhere"), "no such file or folder"),
    (lambda p: str(p) + "/*.jpg", "matches no file"),
], ids=["empty_folder", "missing_path", "glob_without_match"])
def test_inputs_that_hold_no_image_are_a_clear_error(tmp_path, make, message):
    item = make(tmp_path / "in")
    with pytest.raises(polyvit.inference.InputError, match=message):
        expand_inputs([item])


# ---- the job --------------------------------------------------------------------------------------

def test_one_row_per_input_errors_in_their_rows_and_the_same_predictions_as_load(
        folder, tiny_weights, tmp_path):
    out = tmp_path / "rows.jsonl"
    listing = tmp_path / "again.txt"
    listing.write_text(f"{folder}/photo2.jpg\n{folder}/gone.jpg\n")
    summary = tmp_path / "summary.json"
    assert predict(str(folder), str(listing), "--out", str(out), "--weights", tiny_weights,
                   "--backend", "cpp", "--topk", "3", "--batch-size", "3",
                   "--summary-json", str(summary)) == 0
    paths = expand_inputs([str(folder), str(listing)])
    counts = json.loads(summary.read_text())
    assert (counts["rows"], counts["classified"], counts["errors"]) == (12, 7, 5)
    assert counts["error_kinds"] == {"empty": 1, "not an image": 1, "truncated or corrupt": 1,
                                     "too large": 1, "missing": 1}
    assert 0 <= counts["waiting_share"] <= 1 and counts["images_per_second"] > 0
    rows = list(read_rows(str(out)))
    assert_rows_match(rows, paths, expected_rows(paths, tiny_weights), topk=3)
    errors = {os.path.basename(r["path"]): r["error"] for r in rows if r["error"]}
    assert set(errors) == {*BROKEN, "gone.jpg"}
    assert "0 bytes" in errors["empty.jpg"] and "not an image" in errors["not_an_image.png"]
    assert "truncated" in errors["truncated.jpg"] and "decompression bomb" in errors["bomb.png"]
    assert "no such file" in errors["gone.jpg"]
    assert not os.path.exists(str(out) + ".partial")


# Root reads any file (the DAC override capabilities): as root the job runs with those two
# capabilities dropped (util-linux's setpriv), so a mode-000 file is unreadable to it too.
WITHOUT_DAC_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search", "--"]


def test_an_unreadable_file_gets_a_permission_error_row(folder, tiny_weights, tmp_path):
    locked = tmp_path / "locked.jpg"
    locked.write_bytes((folder / "photo1.jpg").read_bytes())
    locked.chmod(0)
    out = tmp_path / "rows.csv"
    argv = [str(locked), str(folder / "photo1.jpg"), "--out", str(out), "--weights", tiny_weights]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads mode-000 files, and setpriv (util-linux) is not here to "
                        "drop that capability")
        done = subprocess.run([*WITHOUT_DAC_OVERRIDE, sys.executable, "-m",
                               "polyvit.cli.predict", *argv, "--quiet"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    else:
        assert predict(*argv) == 0
    rows = list(read_rows(str(out)))
    assert "permission denied" in rows[0]["error"] and rows[1]["error"] == ""


def test_every_format_holds_the_same_rows(folder, tiny_weights, tmp_path):
    tables = {}
    for ext in FORMATS:
        out = tmp_path / f"rows{ext}"
        assert predict(str(folder), "--out", str(out), "--weights", tiny_weights,
                       "--features", "--workers", "2") == 0
        tables[ext] = list(read_rows(str(out)))
    first = tables[".parquet"]
    assert len(first) == 10 and sum(1 for r in first if r["error"]) == len(BROKEN)
    for ext, rows in tables.items():
        assert [r["path"] for r in rows] == [r["path"] for r in first], ext
        for a, b in zip(rows, first):
            assert a["topk_indices"] == b["topk_indices"] and a["error"] == b["error"], ext
            np.testing.assert_allclose(a["topk_probs"], b["topk_probs"], atol=1e-12)
            if b["error"]:
                assert not a["features"]
            else:
                np.testing.assert_allclose(a["features"], b["features"], rtol=1e-6)


def test_features_are_the_normed_class_token(folder, tiny_weights):
    """The features column is the class token after the final norm: the head applied to it
    gives the logits, and it matches the float64 reference's."""
    import torch

    from polyvit import reference

    model = polyvit.load(tiny_weights, backend="cpp", features=True)
    rows = list(polyvit.predict(str(folder), model, topk=10))
    good = [r for r in rows if not r["error"]]
    x = np.stack([polyvit.preprocess(r["path"], CFG, draft=True) for r in good])
    cfg, tensors, _ = polyvit.model.resolve_weights(tiny_weights)
    w = {k: torch.from_numpy(v).double() for k, v in tensors.items()}
    xt = reference.embed(cfg, w, torch.from_numpy(x).double())
    for i in range(cfg.depth):
        xt = reference.block(cfg, w, i, xt, class_token_only=i == cfg.depth - 1)
    want = reference.layernorm(xt[:, 0], w["norm.weight"], w["norm.bias"], cfg.ln_eps).numpy()
    got = np.array([r["features"] for r in good])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    logits, feats = model.logits_and_features(x)
    np.testing.assert_array_equal(feats, got.astype(np.float32))
    np.testing.assert_allclose(logits, feats @ tensors["head.weight"].T + tensors["head.bias"],
                               atol=1e-5)
    assert logits.shape == (len(good), CFG.num_classes) == model(x).shape


@pytest.mark.parametrize("kind,workers", [("thread", 0), ("thread", 3), ("process", 2)])
def test_workers_of_each_kind_give_the_same_rows(folder, tiny_weights, kind, workers):
    model = polyvit.load(tiny_weights, backend="cpp")
    base = list(polyvit.predict(str(folder), model, workers=1, batch_size=4))
    got = list(polyvit.predict(str(folder), model, workers=workers, worker_kind=kind,
                               batch_size=2))
    assert got == base


def test_predict_table_is_a_pyarrow_table_of_the_rows(folder, tiny_weights):
    model = polyvit.load(tiny_weights, backend="torch")
    table = polyvit.predict_table([str(folder / "photo1.jpg"), str(folder / "empty.jpg")], model,
                                  topk=2)
    assert table.column_names == ["path", "topk_indices", "topk_labels", "topk_probs", "error"]
    assert table.num_rows == 2 and len(table.column("topk_indices")[0]) == 2


def test_vit_run_accepts_a_folder(folder, tiny_weights, capsys):
    from polyvit.cli import run as run_cli

    assert run_cli.main([str(folder / "sub"), "--weights", tiny_weights, "--topk", "1"]) == 0
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if ln.endswith((".jpg", ".png"))] == \
        ["flat.png", "photo0.jpg", "photo3.jpg"]


# ---- resume ---------------------------------------------------------------------------------------

def test_resume_after_a_kill_loses_and_repeats_nothing(tmp_path):
    """Kill the job once its first chunks are on disk; --resume completes it with exactly the
    rows of an uninterrupted run, in the same order."""
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(120):
        write_photo(photos / f"{i:03d}.jpg", i, (64, 64))
    out = tmp_path / "rows.jsonl"
    # ViT-S/32 on torch at batch 1: slow enough (tens of ms per image) to be killed midway
    argv = [script("vit-predict"), str(photos), "--out", str(out), "--backend", "torch",
            "--batch-size", "1", "--chunk-rows", "8", "--workers", "1", "--quiet"]
    job = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "rows.jsonl.partial"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if partial.is_dir() and len(list(partial.glob("*.jsonl"))) >= 2:
            break
        time.sleep(0.02)
    assert job.poll() is None, f"the job ended before it could be killed: {job.stderr.read()}"
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not out.exists() and partial.is_dir()
    kept = sum(1 for p in partial.glob("*.jsonl") for _ in open(p))
    assert 16 <= kept < 120

    assert run("vit-predict", *argv[1:]).returncode != 0  # without --resume: refused, kept
    assert partial.is_dir()
    done = run("vit-predict", *argv[1:], "--resume")
    assert done.returncode == 0, done.stderr
    rows = list(read_rows(str(out)))
    assert [r["path"] for r in rows] == [str(photos / f"{i:03d}.jpg") for i in range(120)]

    whole = tmp_path / "whole.jsonl"
    assert run("vit-predict", *argv[1:3], str(whole), *argv[4:]).returncode == 0
    assert [json.loads(a) for a in open(out)] == [json.loads(b) for b in open(whole)]


def test_resume_skips_what_a_finished_file_holds(folder, tiny_weights, tmp_path):
    out = tmp_path / "rows.parquet"
    assert predict(str(folder / "photo1.jpg"), "--out", str(out), "--weights", tiny_weights) == 0
    assert predict(str(folder / "photo1.jpg"), str(folder / "photo2.jpg"), str(folder / "photo1.jpg"),
                   "--out", str(out), "--weights", tiny_weights, "--resume") == 0
    assert [os.path.basename(r["path"]) for r in read_rows(str(out))] == \
        ["photo1.jpg", "photo2.jpg", "photo1.jpg"]


# ---- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["{folder}", "--out", "{tmp}/no/such/folder/rows.jsonl"], "does not exist"),
    (["{folder}", "--out", "{tmp}/rows.xlsx"], "use one of .parquet, .csv, .jsonl"),
    (["{folder}", "--out", "{tmp}"], "is a folder"),
    (["{tmp}/empty_dir", "--out", "{tmp}/rows.csv"], "no images found"),
    (["{folder}", "--out", "{tmp}/rows.csv", "--topk", "11"], "out of range"),
    (["{folder}", "--out", "{tmp}/rows.csv", "--backend", "nosuch"], "nosuch"),
    (["{folder}", "--out", "{tmp}/rows.csv", "--resume", "--overwrite"], "pass one"),
], ids=["missing_folder", "unknown_format", "out_is_a_folder", "no_images", "topk_too_large",
        "unknown_backend", "resume_and_overwrite"])
def test_bad_arguments_are_one_line_errors_before_any_work(folder, tiny_weights, tmp_path, argv,
                                                            message):
    (tmp_path / "empty_dir").mkdir()
    argv = [a.format(folder=folder, tmp=tmp_path) for a in argv] + ["--weights", tiny_weights]
    assert_one_line_error("vit-predict", argv, message)
    assert not list(tmp_path.glob("rows*"))


def test_an_unwritable_output_folder_is_refused_before_work(folder, tiny_weights, tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        target = "/proc/rows.jsonl"  # even root cannot create files in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "rows.jsonl")
    assert_one_line_error("vit-predict", [str(folder), "--out", target, "--weights", tiny_weights],
                          "cannot write")


def test_an_existing_file_is_kept_unless_resume_or_overwrite(folder, tiny_weights, tmp_path):
    out = tmp_path / "rows.csv"
    out.write_text("precious\n")
    assert predict(str(folder), "--out", str(out), "--weights", tiny_weights) == 1
    assert out.read_text() == "precious\n"
    assert predict(str(folder), "--out", str(out), "--weights", tiny_weights, "--overwrite") == 0
    assert len(list(read_rows(str(out)))) == 10


def test_topk_zero_is_refused_by_the_parser(folder, tmp_path):
    done = run("vit-predict", str(folder), "--out", str(tmp_path / "r.csv"), "--topk", "0")
    assert done.returncode == 2 and "positive integer" in done.stderr


def test_engine_ray_without_ray_installed_says_how_to_install(monkeypatch):
    import sys

    from polyvit.inference.ray_engine import RayError, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like
    with pytest.raises(RayError, match=r"pip install 'polyvit\[ray\]'"):
        import_ray()


def test_the_engines_let_openmp_threads_sleep_at_barriers_only_before_the_runtime_loads():
    """vit-predict's model shares the cores with the decoders: OMP_WAIT_POLICY=passive is set
    before the cpp backend loads; an explicit value is kept, and a loaded runtime is left."""
    code = """
import os, sys
from polyvit.backends._native import openmp_loaded, sleep_at_barriers
assert not openmp_loaded()
if os.environ.get("OMP_WAIT_POLICY"):
    assert not sleep_at_barriers() and os.environ["OMP_WAIT_POLICY"] == "active"
    sys.exit(0)
import polyvit
if sys.argv[1] == "cli":
    from polyvit.cli import predict
    assert predict.main([sys.argv[2], "--out", sys.argv[3], "--backend", "cpp", "--quiet"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "passive" and openmp_loaded()
else:
    polyvit.load(None, backend="cpp")
    assert openmp_loaded() and not sleep_at_barriers() and "OMP_WAIT_POLICY" not in os.environ
"""
    if not polyvit.available_backends()["cpp"][0]:
        pytest.skip(f"cpp unavailable: {polyvit.available_backends()['cpp'][1]}")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "a.png"
        Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
        for argv, extra in ((["cli", str(image), str(Path(tmp) / "rows.csv")], {}),
                            (["load"], {}), (["load"], {"OMP_WAIT_POLICY": "active"})):
            done = subprocess.run([sys.executable, "-c", code, *argv], env={**env, **extra},
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
