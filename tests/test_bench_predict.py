"""The dataset benchmark (polyvit.bench.predict, vit-bench --predict): its jobs run end to end
on a few generated JPEGs and its table reports them; which jobs a selection runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import polyvit
from polyvit.bench import predict as bench_predict
from polyvit.cli.bench import predict_runs

from scripts import run

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_a_selection_runs_its_precisions_the_peer_and_ray_with_int8():
    runs, notes = predict_runs(["cpp", "torch"], ["fp32", "int8"], peers=True)
    expected = (["peer"] if HAS_TORCH else []) + ["cpp-fp32", "cpp-int8"] + \
        (["ray-cpp-int8", "ray-running-cpp-int8"] if HAS_RAY else [])
    assert runs == expected
    assert len(notes) == (not HAS_TORCH) + (not HAS_RAY)
    runs, notes = predict_runs(["torch"], ["fp32"], peers=False)
    assert runs == [] and "cpp backend, which is not selected" in notes[0]


def test_the_table_compares_with_the_peer_and_the_local_engine():
    results = [{"run": "peer", "images_per_second": 50.0, "peak_rss_mib": 1000.0},
               {"run": "cpp-int8", "images_per_second": 150.0, "waiting_share": 0.01,
                "peak_rss_mib": 300.0},
               {"run": "ray-running-cpp-int8", "images_per_second": 120.0, "peak_rss_mib": 900.0}]
    text = bench_predict.table(results, 2000, 2)
    assert "| vit-predict cpp int8 | 150.0 | 3.00x | 1.0% | 300 |" in text
    assert "| 120.0 | 2.40x | — | 900 |" in text
    assert "a job on a running cluster: 25% slower than the local engine, same" in text
    # more passes: the table keeps the first pass's rows, the note the median of the pairs
    again = [{"run": "cpp-int8", "images_per_second": 100.0, "pass": k} for k in (1, 2)] + \
        [{"run": "ray-running-cpp-int8", "images_per_second": v, "pass": k}
         for k, v in ((1, 50.0), (2, 90.0))]
    text = bench_predict.table(results + again, 2000, 2)
    assert "| 120.0 | 2.40x | — | 900 |" in text and text.count("| vit-predict") == 2
    assert "running cluster: 25% slower than the local engine (median of 3 paired runs: " \
        "25%, 100%, 11%)" in text


@pytest.mark.skipif(not HAS_TORCH, reason="the peer is torch eager (pip install torch)")
def test_the_peer_job_classifies_every_image(tmp_path):
    text, results = bench_predict.run_section(["peer"], 12, 2, batch=4, folder=str(tmp_path))
    (peer,) = results
    assert peer["rows"] == 12 and peer["images_per_second"] > 0 and peer["cpu_seconds"] > 0
    assert "peer: torch eager + DataLoader(num_workers=2)" in text
    assert len(list((tmp_path / "12").glob("*.jpg"))) == 12


@pytest.mark.skipif(not polyvit.available_backends()["cpp"][0], reason="needs the cpp backend")
def test_vit_bench_predict_adds_the_dataset_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- vit-bench:cpu-matrix -->\nm\n<!-- /vit-bench:cpu-matrix -->\n"
                      "<!-- vit-bench:predict -->\nstale table\n<!-- /vit-bench:predict -->\nend\n")
    out = tmp_path / "out"
    done = run("vit-bench", "--config", "vit_test", "--backends", "cpp", "--precisions", "int8",
               "--batch-sizes", "1", "--quick", "--no-peers", "--predict", "12", "--out",
               str(out), "--update-docs", str(readme), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "predict.json").read_text())
    assert [r["run"] for r in results] == ["cpp-int8"] + \
        (["ray-cpp-int8", "ray-running-cpp-int8"] if HAS_RAY else [])
    for r in results:
        assert r["rows"] == r["classified"] == 12 and r["images_per_second"] > 0
    markdown = (out / "predict.md").read_text()
    assert "| vit-predict cpp int8 |" in markdown
    text = readme.read_text()
    assert "stale table" not in text and text.endswith("end\n")
    assert f"<!-- vit-bench:predict -->\n{markdown.strip()}\n<!-- /vit-bench:predict -->" in text
