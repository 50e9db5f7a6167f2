"""vit-bench and the benchmarks' shared parts: the quick sweep's outputs are checked for content
(not speed), bad options give one line and a non-zero exit, the rounds engine interleaves and
keeps its books right, and the torch peer computes the same function as the reference."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polyvit import backends, parity
from polyvit.bench import report
from polyvit.bench.rounds import paired_ratio, plan_rounds, run_rounds
from polyvit.bench.sweep import Record, Runner, measure
from polyvit.cli import bench as bench_cli
from polyvit.config import get_config
from polyvit.weights import random_weights

from scripts import assert_one_line_error, run

CFG = get_config("vit_test")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `vit-bench --quick` as the README runs it, on the small test config: the sweep, the
    peers and the outputs are the same for every config, and ViT-S/32 would spend most of the
    time in the peers' exports and compiles."""
    out = tmp_path_factory.mktemp("bench")
    done = run("vit-bench", "--quick", "--config", "vit_test", "--out", str(out), timeout=1200)
    return done, out


def test_quick_run_succeeds_and_writes_three_files(quick_run):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Feature matrix" in (out / "results.md").read_text()


def test_quick_run_measures_every_available_backend_and_precision(quick_run):
    _, out = quick_run
    doc = json.loads((out / "results.json").read_text())
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu"]
    assert "torch" in doc["machine"]["versions"]
    assert doc["settings"]["threads"] >= 1 and doc["settings"]["batch_sizes"] == [1, 32]
    rows = doc["results"]
    for name, (ok, _) in backends.available_backends().items():
        # an available backend that only an interpreter runs here is listed, not timed
        timed = ok and backends.backend_class(name).timeable()[0]
        assert doc["backends"][name]["available"] == timed
        if ok and not timed:
            assert doc["backends"][name]["reason"].startswith("not timed: ")
        if not timed:
            continue
        for precision in backends.backend_class(name).precisions:
            if precision == "fp64":
                continue
            for batch in (1, 32):
                mine = [r for r in rows if r["runner"] == name and r["precision"] == precision
                        and r["batch"] == batch and r["kind"] == "polyvit"]
                assert len(mine) == 1, (name, precision, batch)
                row = mine[0]
                assert row["rounds"] >= 3 and row["ms_per_image"] > 0
                assert row["images_per_second"] == pytest.approx(
                    1000 / row["ms_per_image"], rel=1e-6)
                assert 0 <= row["top1_agreement"] <= 1
                if precision == "fp32":
                    assert row["parity"] == "pass", row


def test_quick_run_measures_installed_peers_with_ratios(quick_run):
    _, out = quick_run
    doc = json.loads((out / "results.json").read_text())
    peers = {r["runner"] for r in doc["results"] if r["kind"] == "peer"}
    assert "torch eager" in peers
    for r in doc["results"]:
        if r["kind"] == "polyvit":
            assert r["ratio_to_best_peer"] > 0 and r["best_peer"]
    markdown = (out / "results.md").read_text()
    for name in backends.names():
        assert f"| `{name}` |" in markdown


@pytest.mark.parametrize("argv,message", [
    (["--backends", "torch,nope"], "unknown backend 'nope'"),
    (["--backends", "torch", "--precisions", "int3"], "no selected backend offers precision int3"),
])
def test_bad_options_give_one_line_and_a_non_zero_exit(argv, message, tmp_path):
    assert_one_line_error("vit-bench", [*argv, "--out", str(tmp_path)], message)


def test_bad_batch_size_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_cli.main(["--batch-sizes", "1,0"])
    assert exc.value.code == 2 and "positive integers" in capsys.readouterr().err


# ---- the sweep's bookkeeping, with fake runners --------------------------------------------------

def fake_runner(name, calls, kind="polyvit", fail=False):
    weights = random_weights(CFG, seed=3)

    def build():
        if fail:
            raise RuntimeError("no such device")
        import polyvit

        model = polyvit.load(weights, config=CFG)

        def run(x):
            calls.append(name)
            return model(x)
        return run
    return Runner(name, kind, "fp32", build), weights


def test_rounds_are_interleaved_and_rotated():
    calls: list[str] = []
    a, weights = fake_runner("a", calls)
    b, _ = fake_runner("b", calls)
    c, _ = fake_runner("c", calls)
    records = measure([a, b, c], CFG, weights, batch=2, budget_seconds=0, rounds=3)
    assert calls == ["a", "a", "b", "b", "c", "c",  # warm-up and planning call, in order
                     "a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated rounds
    assert [len(r.seconds) for r in records] == [3, 3, 3]
    assert all(r.parity == "pass" for r in records)


def test_a_runner_that_cannot_start_is_noted_not_fatal():
    calls: list[str] = []
    good, weights = fake_runner("good", calls)
    bad, _ = fake_runner("bad", calls, fail=True)
    records = measure([bad, good], CFG, weights, batch=1, budget_seconds=0, rounds=3)
    assert [r.runner for r in records] == ["good"]
    assert bad.error and "no such device" in bad.error


def test_the_engine_plans_rounds_and_leaves_out_a_call_that_raises():
    calls: list[str] = []

    def call(name):
        calls.append(name)
        if name == "bad":
            raise ValueError("no kernel\nfor this shape")
        return name.upper()

    def clock(c):  # every call "takes" half a second
        c()
        return 0.5
    result = run_rounds({n: lambda n=n: call(n) for n in ("a", "bad", "b")}, warmups=2,
                        budget_seconds=0, clock=clock)
    assert calls[:5] == ["a", "a", "a", "bad", "b"]  # two warm-ups and the planning call
    assert result.errors == {"bad": "ValueError: no kernel"}
    assert result.outputs == {"a": "A", "b": "B"}
    assert result.seconds == {"a": [0.5] * 3, "b": [0.5] * 3}  # the minimum of 3 rounds


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert paired_ratio([2.0, 4.0, 30.0], [1.0, 1.0, 10.0]) == pytest.approx(3.0)


def test_the_torch_peer_computes_the_reference_function():
    torch = pytest.importorskip("torch")
    from polyvit.bench import torch_peer

    for cfg in (CFG, CFG.replace(patch_norm_pre=True, patch_norm_post=True, qkv_bias=False,
                                 gelu="tanh")):
        weights = random_weights(cfg, seed=5)
        images = parity.random_images(cfg, 3, seed=6)
        oracle, tol = parity.reference_outputs(cfg, weights, images)
        with torch.inference_mode():
            logits = torch_peer.vit(cfg, weights)(torch.from_numpy(images)).numpy()
        assert parity.compare(logits, oracle, tol).passed


def test_plan_rounds_fits_the_budget():
    assert plan_rounds(0.5, 30) == 50
    assert plan_rounds(2.0, 30) == 15
    assert plan_rounds(20.0, 4) == 3


def test_ratio_to_best_peer_uses_the_same_precision_when_measured():
    def rec(runner, kind, precision, seconds):
        return Record(runner, kind, precision, 4, [seconds] * 3, 0.0, 1.0, 1.0, "n/a")
    mine = rec("cpp", "polyvit", "bf16", 0.1)
    records = [mine, rec("ort", "peer", "fp32", 0.05), rec("ov", "peer", "bf16", 0.2),
               rec("ov", "peer", "fp32", 0.08)]
    value, peer = report.ratio(mine, records)
    assert peer == "ov bf16" and value == pytest.approx(2.0)
    int8 = rec("cpp", "polyvit", "int8", 0.025)
    value, peer = report.ratio(int8, records + [int8])
    assert peer == "ort fp32" and value == pytest.approx(2.0)  # no int8 peer: the fastest


def test_update_docs_replaces_only_its_section(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n\n<!-- vit-bench:gpu -->\nold gpu\n<!-- /vit-bench:gpu -->\n")
    bench_cli.update_docs(doc, "cpu", "## cpu one")
    bench_cli.update_docs(doc, "cpu", "## cpu two")
    text = doc.read_text()
    assert "cpu two" in text and "cpu one" not in text and "old gpu" in text
    assert text.count("<!-- vit-bench:cpu -->") == 1


def test_update_docs_writes_only_the_matrix_where_a_readme_asks_for_it(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- vit-bench:cpu-matrix -->\nold\n<!-- /vit-bench:cpu-matrix -->\nend\n")
    bench_cli.update_docs(readme, "cpu", "## full report\n| matrix |", "| matrix |")
    text = readme.read_text()
    assert "| matrix |" in text and "full report" not in text and "old" not in text
    assert text.endswith("end\n")


@pytest.mark.parametrize("script,backend", [("sycl_vs_cpp", "sycl"), ("bench_mojo", "mojo")])
def test_a_benchmark_script_runs_a_tiny_comparison(script, backend, capsys, tmp_path):
    """The scripts' shared run (bench/compare.py) end to end, on the test model."""
    ok, reason = backends.available_backends()[backend]
    if not ok:
        pytest.skip(reason)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(script, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figures.json"
    argv = ["--config", "vit_test", "--batch", "2", "--rounds", "3", "--pause", "0",
            "--json", str(out)]
    assert module.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"speed-up of {backend} fp32 over" in printed and "torch eager fp32" in printed
    rows = json.loads(out.read_text())["results"]
    assert {r["runner"] for r in rows} >= {backend, "torch eager"}
    assert all(r["rounds"] == 3 and r["parity"] == "pass" for r in rows)


def test_kernel_benchmarks_run(tmp_path):
    """The pytest-benchmark suite stays runnable (one call each, no timing)."""
    pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(root / "benchmarks" / "test_kernels.py"), "--benchmark-disable"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout


def test_int8_is_compared_with_calibrated_int8_peers(quick_run):
    """OpenVINO (NNCF post-training quantization) and ONNX Runtime (static QDQ) int8 run in the
    same sweep, each with its agreement with the reference, and polyvit's int8 is compared with
    the best of them, not with a bf16 or fp32 peer."""
    if not all(importlib.util.find_spec(m) for m in ("openvino", "nncf", "onnxruntime")):
        pytest.skip("the int8 peers need openvino, nncf and onnxruntime (the bench extra)")
    ok, why = backends.backend_class("cpp").supports("int8")
    if not ok:
        pytest.skip(f"cpp int8 does not run here: {why}")
    _, out = quick_run
    rows = json.loads((out / "results.json").read_text())["results"]
    for batch in (1, 32):
        peers = {r["runner"]: r for r in rows if r["kind"] == "peer" and r["precision"] == "int8"
                 and r["batch"] == batch}
        assert set(peers) == {"openvino", "onnxruntime"}, peers
        assert all(0.99 <= r["cosine_min"] <= 1 for r in peers.values())
        mine = next(r for r in rows if r["runner"] == "cpp" and r["precision"] == "int8"
                    and r["batch"] == batch)
        assert mine["best_peer"] in ("openvino int8", "onnxruntime int8")
        assert mine["cosine_min"] is not None


def test_the_int8_calibration_study_simulates_cpp_and_keeps_dynamic_scales_the_better():
    """benchmarks/int8_calibration.py on the trained digits model: its simulation of per-token
    dynamic scales agrees with cpp int8 itself as closely as cpp agrees with fp32, and static
    (calibrated) scales agree worse with fp32 than dynamic ones (why cpp keeps them)."""
    pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")
    ok, reason = backends.available_backends()["cpp"]
    if not ok:
        pytest.skip(reason)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_calibration.py"
    spec = importlib.util.spec_from_file_location("int8_calibration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import polyvit
    from polyvit.datasets import open_dataset
    from polyvit.preprocessing import preprocess
    from polyvit.weights import load as load_weights

    weights_path = Path(__file__).resolve().parents[1] / "weights" / "vit_digits.safetensors"
    cfg, weights = load_weights(weights_path)
    train, test = open_dataset("digits", "train"), open_dataset("digits", "test")
    calibration = np.stack([preprocess(x, cfg) for x in train.items[:16]])
    images = np.stack([preprocess(x, cfg) for x in test.items[:48]])
    cpp = polyvit.load(weights_path, backend="cpp", precision="int8")(images)
    rows, found = module.study("digits", cfg, weights, calibration, images, cpp)
    assert len(rows) == 4
    dynamic = found["dynamic per token (cpp's)"]
    assert abs(dynamic.cosine.min() - found["cpp"].cosine.min()) < 2e-4
    assert (dynamic.top1 == found["cpp"].top1).all()
    for scheme in ("static min/max", "static 0.01 % quantiles"):
        assert found[scheme].cosine.min() < dynamic.cosine.min()
