"""vit-train end to end on the real digits data, with small runs: resuming after a kill equals an
uninterrupted run bit for bit, two DDP processes follow one process's loss curve, fine-tuning
a timm checkpoint at another image size, and every bad input of the issue refused before work is
lost. The full default recipe (>= 97 % test top-1) is checked by test_train_recipe.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="the digits dataset is scikit-learn's")

import polyvit  # noqa: E402
from polyvit import backends, parity, weights as wfmt  # noqa: E402
from polyvit.errors import ConfigError, DatasetError, TrainingError  # noqa: E402
from polyvit.training import TrainConfig, train  # noqa: E402
from polyvit.training import checkpoint  # noqa: E402

# A small run: 1,077 training digits, batch 64 -> 16 steps per epoch, about a second each epoch.
QUIET = ["progress=false", "tensorboard=false", "threads=1", "workers=2"]
SMALL = QUIET + ["epochs=2", "warmup_epochs=1"]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyvit.cli.train", *args], capture_output=True,
                          text=True, timeout=timeout)


def config(*assignments: str) -> TrainConfig:
    return TrainConfig().override(list(assignments))[0]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(out / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """Three epochs, checkpointed every step, never stopped (in a subprocess: one thread, as
    the interrupted runs)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    r = run_cli("--data", "digits", "--out", str(out), *QUIET, "epochs=3", "warmup_epochs=1",
                "checkpoint_every=1", "ema=0.9")
    assert r.returncode == 0, r.stderr
    return out


def wait_for_step(out: Path, proc: subprocess.Popen, step: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if (out / "last.pt").exists():  # written whole or not at all: any read must succeed
            saved = checkpoint.load(out / "last.pt")["step"]
            if saved >= step:
                return saved
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_resume_after_a_kill_equals_the_uninterrupted_run(uninterrupted: Path, tmp_path: Path,
                                                          how: str) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "polyvit.cli.train", "--data", "digits",
                             "--out", str(out), *QUIET, "epochs=3", "warmup_epochs=1",
                             "checkpoint_every=1", "ema=0.9"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, proc, 20)  # in the second epoch: mid-epoch state must survive too
    proc.send_signal(getattr(signal, how))
    stdout, stderr = proc.communicate(timeout=60)
    if how == "SIGINT":  # a graceful stop: it finishes the step, saves, and says how to go on
        assert proc.returncode == 130, stderr
        assert "--resume" in stdout
    stopped_at = checkpoint.load(out / "last.pt")["step"]
    assert 20 <= stopped_at < 48
    r = run_cli("--resume", str(out))
    assert r.returncode == 0, r.stderr
    assert f"resuming {out / 'last.pt'} at step {stopped_at}" in r.stdout
    assert_same_weights(final_weights(out), final_weights(uninterrupted))
    a, b = (checkpoint.load(o / "last.pt") for o in (out, uninterrupted))
    assert a["losses"] == b["losses"]
    assert a["average"]["shadow"].keys() == b["average"]["shadow"].keys()
    for k in a["average"]["shadow"]:
        assert torch.equal(a["average"]["shadow"][k], b["average"]["shadow"][k])
    # the metrics file holds each epoch once, as the uninterrupted run's
    rows = lambda o: [line.split(",")[:2] for line in (o / "metrics.csv").read_text().splitlines()]
    assert rows(out) == rows(uninterrupted)


def test_two_ddp_processes_follow_one_process(tmp_path: Path) -> None:
    """torchrun, 2 processes on gloo, global batch 64 (32 each), against one process.

    Each process augments the whole global batch and keeps its half, so both runs see the same
    inputs and targets. DDP then averages two 32-sample mean gradients, which is exactly what
    one process computes with accum_steps=2 (the same halves, and (a + b) / 2 = a/2 + b/2 in
    floating point): those two runs must be equal bit for bit.

    Against one process with the batch of 64 in one piece, only the rounding of the gradient's
    reduction differs: a float32 ulp or two (~1e-7) per step. It stays there through the
    warmup; at the peak learning rate AdamW's normalised steps let it grow (a rounding
    difference in a near-zero gradient component can flip a whole step of that weight), to
    2.6e-4 relative in 32 steps here. The tolerance, 2e-3, bounds that growth with an order of
    magnitude to spare and is still ten times under the loss's own change from step to step
    (2-10 %), so a run that followed another curve would fail it."""
    common = ["--data", "digits", *QUIET, "epochs=2", "warmup_epochs=1", "drop_path=0"]
    ddp = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "polyvit.cli.train", *common,
                        "--out", str(ddp)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "2 process(es)" in r.stdout
    one, accum = tmp_path / "one", tmp_path / "accum"
    for out, extra in ((one, []), (accum, ["accum_steps=2"])):
        r = run_cli(*common, "--out", str(out), *extra)
        assert r.returncode == 0, r.stderr
    losses = {o.name: np.array(checkpoint.load(o / "last.pt")["losses"]) for o in (ddp, one, accum)}
    assert len(losses["ddp"]) == len(losses["one"]) == 32
    # the curve falls: the comparison is of a run that learns
    assert losses["one"][-4:].mean() < losses["one"][:4].mean() - 0.03
    np.testing.assert_array_equal(losses["ddp"], losses["accum"])
    assert_same_weights(final_weights(ddp), final_weights(accum))
    np.testing.assert_allclose(losses["ddp"], losses["one"], rtol=2e-3)
    ddp_results = json.loads((ddp / "results.json").read_text())
    assert ddp_results["processes"] == 2 and ddp_results["test_n"] == 360


def test_finetune_a_timm_checkpoint_at_another_image_size(tmp_path: Path) -> None:
    """A timm-layout ViT-S/32 (224 px, 1000 classes) to the 10 digit classes at 64 px: the
    position embedding resampled from 7x7 to 2x2, a new head; with the backbone frozen (a linear
    probe) every other weight stays what the import and resampling gave, exactly."""
    from checkpoints import timm_state_dict

    from polyvit.resize import resample_pos_embed

    cfg = polyvit.get_config("vit_small_patch32_224")
    source = wfmt.random_weights(cfg, seed=11)
    ckpt = tmp_path / "vit_small_patch32_224.pth"
    torch.save(timm_state_dict(source), ckpt)
    out = tmp_path / "probe"
    results = train(config("epochs=1", "batch_size=32", "warmup_epochs=0", f"init={ckpt}",
                           "image_size=64", "freeze_backbone=true", "crop_scale=1", "rotate=0",
                           *QUIET), out)
    tuned_cfg, tuned = wfmt.load(out / "model.safetensors")
    assert (tuned_cfg.num_classes, tuned_cfg.image_size, tuned_cfg.num_tokens) == (10, 64, 5)
    assert wfmt.labels_of(out / "model.safetensors") == [str(i) for i in range(10)]
    np.testing.assert_array_equal(tuned["pos_embed"], resample_pos_embed(source["pos_embed"], 2))
    for k in source:
        if not k.startswith(("head.", "pos_embed")):
            np.testing.assert_array_equal(tuned[k], source[k], err_msg=k)
    assert "new head of 10 classes" in results["source"]
    assert results["test_top1"] > 0.2  # a linear probe on random features still learns a little
    # the fine-tuned model runs on every backend at its new size, within the fp32 parity rule
    images = parity.random_images(tuned_cfg, 2)
    oracle, tol = parity.reference_outputs(tuned_cfg, tuned, images)
    from conftest import INTERPRETED

    for name, (ok, _) in backends.available_backends().items():
        if ok and name not in INTERPRETED:  # the interpreter takes ~20 s for 12 blocks
            logits = polyvit.load(out / "model.safetensors", backend=name)(images)
            assert parity.compare(logits, oracle, tol).passed, name


def test_unfrozen_finetune_trains_every_layer_and_resampling_is_a_load_option(tmp_path) -> None:
    cfg = polyvit.get_config("vit_test")
    source = wfmt.random_weights(cfg, seed=2)
    ckpt = wfmt.save(tmp_path / "vit_test.safetensors", cfg, source)
    out = tmp_path / "ft"
    train(config("epochs=1", f"init={ckpt}", "image_size=48", *QUIET), out)
    tuned_cfg, tuned = wfmt.load(out / "model.safetensors")
    assert tuned_cfg.image_size == 48 and tuned_cfg.num_classes == 10
    assert not np.array_equal(tuned["blocks.0.attn.qkv.weight"], source["blocks.0.attn.qkv.weight"])
    # a checkpoint trained at 48 px runs at 64 px through the load-time option
    model = polyvit.load(out / "model.safetensors", backend="torch", image_size=64)
    assert model(parity.random_images(model.config, 1)).shape == (1, 10)


# ---- what a person sees -----------------------------------------------------------------------

def test_a_run_leaves_its_outputs_and_vit_run_names_the_classes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run_cli("--data", "digits", "--out", str(out), *SMALL[:-1], "tensorboard=true",
                "epochs=2", "optimizer=adamw8bit")
    assert r.returncode == 0, r.stderr
    assert "vit-train config" in r.stdout and "optimizer       " in r.stdout
    assert "optimizer state" in r.stdout and "fp32 AdamW holds" in r.stdout
    for name in ("model.safetensors", "last.pt", "metrics.csv", "curves.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "tensorboard").iterdir())
    results = json.loads((out / "results.json").read_text())
    for key in ("test_top1", "test_top5", "val_top1", "best_epoch", "train_img_per_s",
                "optimizer_state_bytes", "test_per_class"):
        assert key in results, key
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,lr,train_loss,val_loss,val_top1") and len(lines) == 3
    meta_cfg = json.loads(wfmt.read_safetensors(out / "model.safetensors")[0]["train_config"])
    assert meta_cfg["optimizer"] == "adamw8bit"
    # vit-run on a digit prints the dataset's class names the model records
    digit = tmp_path / "digit.png"
    from PIL import Image

    from polyvit.datasets import open_dataset

    test = open_dataset("digits", "test")
    Image.fromarray(test.items[0]).save(digit)
    run = subprocess.run([sys.executable, "-m", "polyvit.cli.run", str(digit), "--weights",
                          str(out / "model.safetensors"), "--topk", "3", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    labels = [e["label"] for e in json.loads(run.stdout)["results"][0]["topk"]]
    assert all(label in [str(i) for i in range(10)] for label in labels)


def test_early_stopping_stops_on_a_flat_val_metric(tmp_path: Path) -> None:
    # lr so small that val top-1 cannot move for a whole epoch
    results = train(config("epochs=6", "patience=2", "lr=1e-9", "warmup_epochs=0", *QUIET),
                     tmp_path / "run")
    assert results["stopped_early"] and results["epochs_run"] == 3


# ---- bad input --------------------------------------------------------------------------------

def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"(loss is nan|non-finite).* step \d+") as err:
        train(config("lr=1e38", "grad_clip=0", "warmup_epochs=0", "checkpoint_every=1", *SMALL),
              out)
    assert "last good state" in str(err.value)
    if (out / "last.pt").exists():
        state = checkpoint.load(out / "last.pt")
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_unwritable_output_folder_is_refused_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run_cli("--data", "digits", "--out", str(blocker / "run"), *SMALL)
    assert r.returncode == 1
    assert "cannot write the output folder" in r.stderr and "epoch" not in r.stdout


def test_unknown_key_on_the_command_line(tmp_path: Path) -> None:
    r = run_cli("--data", "digits", "--out", str(tmp_path / "x"), "learning_rate=1")
    assert r.returncode == 1 and "unknown config key 'learning_rate'" in r.stderr
    assert "valid keys" in r.stderr and not (tmp_path / "x").exists()


def test_resume_refuses_another_config_and_a_second_run_in_the_same_folder(tmp_path) -> None:
    out = tmp_path / "run"
    train(config("epochs=1", *QUIET), out)
    with pytest.raises(TrainingError, match="another config: lr=0.002"):
        train(TrainConfig(), out, resume=True, overrides=["lr=0.1"])
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config("epochs=1", *QUIET), out)
    # the keys that only say how long to go on may change
    results = train(TrainConfig(), out, resume=True, overrides=["epochs=2"])
    assert results["epochs_run"] == 2


def test_resume_refuses_a_truncated_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config("epochs=1", *QUIET), out)
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingError, match="truncated or corrupt"):
        train(TrainConfig(), out, resume=True)


def write_image_folder(root: Path, per_class: int = 40) -> None:
    from PIL import Image

    from polyvit.datasets import open_dataset

    digits = open_dataset("digits", "train")
    for split in ("train", "val"):
        for label in (0, 1):
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True)
            picks = np.flatnonzero(digits.labels == label)[:per_class]
            for i in picks:
                Image.fromarray(digits.items[i]).resize((16, 16)).save(folder / f"{i}.png")


def test_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_image_folder(root)
    (root / "train" / "digit0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "train" / "digit1" / "empty.jpg").write_bytes(b"")
    results = train(config(f"data={root}", "epochs=1", "batch_size=16", *QUIET), tmp_path / "run")
    assert results["skipped_images"] == {"train": 2, "val": 0}
    assert "test_top1" not in results and "val_top1" in results  # no test split: none scored


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such"), ("empty", "empty"), ("empty_class", "no images"),
])
def test_bad_dataset_folders(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout == "empty":
        root.mkdir()
    elif layout == "empty_class":
        write_image_folder(root, per_class=3)
        (root / "train" / "digit2").mkdir()
    with pytest.raises(DatasetError, match=message):
        train(config(f"data={root}", *SMALL), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_fp16_amp_needs_a_gpu_and_init_excludes_model(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: amp=fp16 is allowed here")
    with pytest.raises(ConfigError, match="amp=fp16 runs on CUDA"):
        train(config("amp=fp16", *SMALL), tmp_path / "run")
    r = run_cli("--data", "digits", "--out", str(tmp_path / "y"), "init=x.pth", "model=vit_test")
    assert r.returncode == 1 and "drop model=" in r.stderr


def test_bf16_autocast_trains_on_the_cpu(tmp_path: Path) -> None:
    runs = {amp: tmp_path / amp for amp in ("off", "bf16")}
    results = {amp: train(config(f"amp={amp}", *QUIET, "epochs=4", "warmup_epochs=1"), out)
               for amp, out in runs.items()}
    losses = {amp: np.array(checkpoint.load(out / "last.pt")["losses"]) for amp, out in runs.items()}
    assert losses["bf16"][-8:].mean() < losses["bf16"][:8].mean() - 0.1  # it learns
    # and follows the fp32 curve: bf16 rounds each product to 8 bits (0.4 %), and the runs
    # drift apart step by step from there (2.3 % at worst over these 64 steps here)
    np.testing.assert_allclose(losses["bf16"], losses["off"], rtol=0.05)
    assert abs(results["bf16"]["val_top1"] - results["off"]["val_top1"]) <= 0.05


def test_torch_compile_trains_the_same_model(tmp_path: Path) -> None:
    """compile=true runs the model through torch.compile (inductor builds C++ kernels here, about
    20 s); it computes the same losses as eager up to the reordering of float32 sums."""
    runs = {c: tmp_path / c for c in ("eager", "compiled")}
    for c, out in runs.items():
        train(config(f"compile={c == 'compiled'}", *QUIET, "epochs=1", "batch_size=256",
                     "warmup_epochs=0"), out)
    eager, compiled = (np.array(checkpoint.load(o / "last.pt")["losses"]) for o in runs.values())
    assert len(compiled) == 4
    np.testing.assert_allclose(compiled, eager, rtol=1e-4)


def test_wandb_without_the_package_is_refused_before_work(tmp_path: Path) -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed here: wandb=true would log a real run")
    with pytest.raises(ConfigError, match="wandb=true needs the wandb package"):
        train(config("wandb=true", *SMALL), tmp_path / "run")
    assert not (tmp_path / "run").exists()
