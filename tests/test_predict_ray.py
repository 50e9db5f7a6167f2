"""vit-predict --engine ray: the same rows as the local engine, on a real local Ray cluster."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import polyvit
from polyvit.cli import predict as predict_cli
from polyvit.inference import Job, expand_inputs, read_rows

from scripts import run
from test_predict import folder, tiny_weights  # noqa: F401 - shared fixtures

try:  # through polyvit, which readies the SYCL runtime before Ray imports dpctl
    from polyvit.inference.ray_engine import RayError, import_ray

    ray = import_ray()
except RayError as exc:
    pytest.skip(f"Ray is the optional extra polyvit[ray] (part of dev): {exc}",
                allow_module_level=True)


@pytest.fixture(scope="module")
def cluster():
    """One local cluster of 2 CPUs for the module (starting one takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    yield
    ray.shutdown()


def assert_same_rows(got, want):
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for a, b in zip(got, want):
        assert a["error"] == b["error"]
        assert a["topk_indices"] == b["topk_indices"] and a["topk_labels"] == b["topk_labels"]
        np.testing.assert_allclose(a["topk_probs"], b["topk_probs"], rtol=0, atol=1e-6)
        if b.get("features"):
            np.testing.assert_allclose(a["features"], b["features"], rtol=0, atol=1e-6)
        else:
            assert not a.get("features")


@pytest.mark.parametrize("backend,precision,features", [("cpp", "fp32", True),
                                                        ("cpp", "int8", False),
                                                        ("sycl", "fp32", False)])
def test_ray_engine_gives_the_local_engines_rows(cluster, folder, tiny_weights, backend,
                                                 precision, features):
    """sycl too: its actors get the SYCL runtime's environment from the driver."""
    if not polyvit.available_backends()[backend][0]:
        pytest.skip(f"backend {backend} unavailable: {polyvit.available_backends()[backend][1]}")
    paths = expand_inputs([str(folder), str(folder / "photo1.jpg")])
    job = Job(weights=tiny_weights, backend=backend, precision=precision, topk=4,
              batch_size=3, features=features)
    job.check()
    local = [r for rows in job.run_local(paths) for r in rows]
    remote = [r for rows in job.run_ray(paths, actors=2) for r in rows]
    assert len(local) == len(paths) == 11 and sum(1 for r in local if r["error"]) == 4
    assert_same_rows(remote, local)


def test_vit_predict_engine_ray_writes_the_same_file(cluster, folder, tiny_weights, tmp_path):
    outs = {}
    for engine in ("local", "ray"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        assert predict_cli.main([str(folder), "--out", str(outs[engine]), "--engine", engine,
                                 "--weights", tiny_weights, "--quiet"]) == 0
    assert_same_rows(list(read_rows(str(outs["ray"]))), list(read_rows(str(outs["local"]))))


def test_an_unreachable_ray_address_is_a_clear_error_within_seconds(folder, tiny_weights,
                                                                   tmp_path):
    start = time.monotonic()
    done = run("vit-predict", str(folder), "--out", str(tmp_path / "rows.parquet"),
               "--weights", tiny_weights, "--engine", "ray", "--ray-address", "127.0.0.1:9",
               timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 1 and "cannot reach a Ray cluster at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []  # no output, no partial folder


def test_more_actors_than_the_cluster_can_hold_is_refused_not_a_hang(cluster, folder,
                                                                    tiny_weights):
    job = Job(weights=tiny_weights, backend="cpp")
    with pytest.raises(RayError, match="--ray-actors 3 or fewer"):
        next(job.run_ray(expand_inputs([str(folder)]), actors=4))


# ---- vit-eval --engine ray -------------------------------------------------------------------------

def assert_same_report(got: dict, want: dict) -> None:
    """The counts are the same images scored the same way: equal; the loss is a float sum."""
    for key in ("n", "skipped", "top1", "top5", "per_class", "backend", "precision", "crops"):
        assert got[key] == want[key], key
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
    assert sorted(got["skipped_items"]) == sorted(want["skipped_items"])


@pytest.mark.parametrize("precision,crops", [("int8", "center"), ("fp32", "five")])
def test_eval_on_ray_scores_a_dataset_of_arrays_as_the_local_engine(cluster, precision, crops):
    """digits: the items are one uint8 array, shipped to the decode tasks as tensor columns."""
    pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")
    from polyvit.datasets import open_dataset
    from polyvit.evaluation import evaluate, evaluate_ray
    from test_eval import WEIGHTS

    data = open_dataset("digits", "test")
    local = evaluate(polyvit.load(WEIGHTS, backend="cpp", precision=precision), data,
                     crops=crops)
    remote = evaluate_ray(str(WEIGHTS), data, backend="cpp", precision=precision, crops=crops,
                          batch_size=50, actors=2)
    assert remote["engine"] == "ray" and remote["actors"] == 2
    assert local["n"] == 360
    # five crops of a 16 px digit at 1.5x cut the digit: the model is not made for them, but
    # both engines must still agree on every count
    assert local["top1"] >= (0.97 if crops == "center" else 0.3)
    assert_same_report(remote, local)


def test_eval_on_ray_skips_and_counts_unreadable_files_as_the_local_engine(cluster, tmp_path):
    pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")
    from polyvit.datasets import open_dataset
    from polyvit.evaluation import evaluate, evaluate_ray
    from test_eval import WEIGHTS, write_digit_folder

    write_digit_folder(tmp_path, [str(c) for c in range(10)])
    (tmp_path / "test" / "3" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "test" / "7" / "empty.png").write_bytes(b"")
    data = open_dataset(tmp_path, "test")
    local = evaluate(polyvit.load(WEIGHTS, backend="cpp"), data)
    remote = evaluate_ray(str(WEIGHTS), data, backend="cpp", batch_size=7)
    assert local["n"] == 40 and local["skipped"] == 2
    assert_same_report(remote, local)


def test_vit_eval_engine_ray_prints_the_local_report(cluster, tmp_path):
    pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")
    from polyvit.cli import eval as eval_cli
    from test_eval import WEIGHTS

    reports = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.json"
        assert eval_cli.main([str(WEIGHTS), "--data", "digits", "--backend", "cpp", "--engine",
                              engine, "--out", str(out), "--json"]) == 0
        reports[engine] = json.loads(out.read_text())
    assert_same_report(reports["ray"], reports["local"])
    assert reports["ray"]["config"] == reports["local"]["config"] == "vit_digits"


def test_vit_eval_an_unreachable_ray_address_is_a_clear_error_within_seconds():
    pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")
    from test_eval import WEIGHTS

    start = time.monotonic()
    done = run("vit-eval", str(WEIGHTS), "--data", "digits", "--engine", "ray",
               "--ray-address", "127.0.0.1:9", timeout=60)
    assert time.monotonic() - start < 30
    assert done.returncode == 1 and "cannot reach a Ray cluster at 127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("n,actors,batch", [(2000, 1, 32), (2000, 3, 32), (5, 2, 32), (1, 1, 32),
                                            (100, 2, 8), (257, 1, 300)])
def test_blocks_cover_the_inputs_once_in_order_small_first(n, actors, batch):
    from polyvit.inference.ray_engine import BLOCK_ROWS, block_slices

    slices = block_slices(n, actors, batch)
    assert [s for s, _ in slices] == list(np.cumsum([0] + [r for _, r in slices[:-1]]))
    assert sum(r for _, r in slices) == n and all(r > 0 for _, r in slices)
    sizes = [r for _, r in slices]
    assert max(sizes) <= BLOCK_ROWS and sizes[0] <= batch
    assert sizes[:-1] == sorted(sizes[:-1])  # a model starts on a small block, then larger ones
    assert block_slices(0, actors, batch) == [(0, 0)]
