"""benchmarks/bench_train.py --smoke: the training-step benchmark runs on the test model, checks
that polyvit and the timm-style peers compute the same loss before timing, and reports a
finite, positive img/s for every model and precision it runs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_times_both_models_on_the_same_math(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "train.json"
    assert bench.main(["--smoke", "--batch", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())

    assert doc["config"] == "vit_test" and doc["steps"] == 2
    # the equal-loss check ran before timing, on all three models, within its tolerance
    check = doc["equal_loss"]
    assert check["checked"] is True
    assert set(check["losses"]) == {"polyvit", "timm-style", "timm-style SDPA"}
    assert check["max_abs_loss_diff"] < 1e-4
    assert len(set(doc["params"].values())) == 1

    ran = set(doc["precisions"])
    skipped = {s["precision"] for s in doc["skipped"]}
    assert "fp32" in ran and ran | skipped == {"fp32", "bf16"}
    rows = doc["results"]
    assert {(r["model"], r["precision"]) for r in rows} == \
        {(m, p) for m in ("polyvit", "timm-style", "timm-style SDPA") for p in ran}
    for r in rows:
        assert math.isfinite(r["img_per_s"]) and r["img_per_s"] > 0
        assert len(r["step_ms"]) == 2
        assert math.isclose(r["img_per_s"], 4 / (r["ms_per_step"] / 1e3))
        if r["model"] == "timm-style":
            assert r["ratio_vs_reference"] == 1.0
        assert f"| {r['model']} | {r['precision']} |" in printed
