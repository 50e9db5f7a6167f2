"""Importers: a checkpoint written in each released layout imports, converts, and gives the logits
of a model built directly from the same weights in that layout's own conventions, within the
parity rule with top-5 identical."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import load as load_polyvit_file
from polyvit.weights import random_weights

from checkpoints import (SeedViT, edit_json, flax_forward, flax_vit_arrays, randomize_,
                         seed_checkpoint, stack_blocks, timm_state_dict, write_npz,
                         write_timm_hub_folder)

BATCH = 2


def assert_imports_faithfully(path, expected_oracle, images, layout, **load_kwargs):
    """Import `path`, check its layout, and hold its fp32 logits to `expected_oracle` (the
    native model's float64 logits) by the parity rule; also convert it and reload the result."""
    cfg, weights, found = polyvit.import_checkpoint(path, **load_kwargs)
    assert found == layout
    ours64, tol = parity.reference_outputs(cfg, weights, images)
    # same math in float64: the import is exact up to float64 rounding of the native model
    np.testing.assert_allclose(ours64, expected_oracle, rtol=1e-9, atol=1e-9)
    logits = polyvit.load(path, **load_kwargs)(images)
    result = parity.compare(logits, expected_oracle, tol)
    assert result.passed, result.describe()
    return cfg, weights


def assert_converts(tmp_path, src, cfg, weights, **kwargs):
    dst = tmp_path / "converted.safetensors"
    converted_cfg = polyvit.convert(src, dst, **kwargs)
    assert converted_cfg == cfg
    cfg2, weights2 = load_polyvit_file(dst)
    assert cfg2 == cfg
    assert weights2.keys() == weights.keys()
    for k in weights:
        np.testing.assert_array_equal(weights2[k], weights[k])
    cfg3, _, layout = polyvit.import_checkpoint(dst)
    assert layout == "polyvit" and cfg3 == cfg


# ---- timm ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit_s32():
    cfg = get_config("vit_small_patch32_224")
    weights = random_weights(cfg, seed=21)
    images = parity.random_images(cfg, BATCH, seed=22)
    oracle, _ = parity.reference_outputs(cfg, weights, images)
    return cfg, weights, images, oracle


@pytest.mark.parametrize("filename", ["vit_small_patch32_224.augreg_in21k_ft_in1k.pth",
                                      "pytorch_model.bin", "model.safetensors"])
def test_timm_state_dict(tmp_path, vit_s32, filename):
    cfg, weights, images, oracle = vit_s32
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(dict(timm_state_dict(weights)), path)
    else:
        torch.save(timm_state_dict(weights), path)
    got_cfg, got = assert_imports_faithfully(path, oracle, images, "timm")
    assert got_cfg.name == "vit_small_patch32_224" and got_cfg.num_heads == 6
    assert got_cfg.ln_eps == 1e-6 and got_cfg.gelu == "erf" and got_cfg.qkv_bias
    assert_converts(tmp_path, path, got_cfg, got)


def test_timm_training_checkpoint_with_wrapper_and_prefix(tmp_path, vit_s32):
    """timm's train.py saves {"state_dict": ..., "epoch": ...}; DataParallel adds "module."."""
    cfg, weights, images, oracle = vit_s32
    state = {f"module.{k}": v for k, v in timm_state_dict(weights).items()}
    path = tmp_path / "checkpoint-10.pth.tar"
    torch.save({"epoch": 10, "arch": "vit_small_patch32_224", "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    assert_imports_faithfully(path, oracle, images, "timm")


def test_timm_hub_folder_carries_name_and_preprocessing(tmp_path, vit_s32):
    cfg, weights, images, oracle = vit_s32
    folder = write_timm_hub_folder(tmp_path / "vit_small_patch32_224.augreg_in21k_ft_in1k",
                                   "vit_small_patch32_224", weights, cfg.num_classes)
    got_cfg, _ = assert_imports_faithfully(folder, oracle, images, "timm")
    assert got_cfg.name == "vit_small_patch32_224"
    pre = got_cfg.preprocessing
    assert (pre.resize, pre.crop_pct, pre.interpolation, pre.mean) == \
        ("shorter", 0.9, "bicubic", (0.5, 0.5, 0.5))


def test_timm_head_count_follows_the_family_rule_or_the_user(tmp_path):
    """A width of 48 is not a multiple of 64: the importer asks for num_heads, then uses it."""
    cfg = get_config("vit_test")  # 48 wide, 3 heads
    weights = random_weights(cfg, seed=23)
    path = tmp_path / "tiny.pth"
    torch.save(timm_state_dict(weights), path)
    with pytest.raises(polyvit.WeightsError, match="num_heads"):
        polyvit.import_checkpoint(path)
    images = parity.random_images(cfg, BATCH, seed=24)
    oracle, _ = parity.reference_outputs(cfg, weights, images)
    got_cfg, _ = assert_imports_faithfully(path, oracle, images, "timm", num_heads=3)
    assert got_cfg.num_heads == 3


# ---- JAX: google-research/vision_transformer AugReg and big_vision ------------------------------

JAX_SHAPE = dict(dim=48, depth=2, heads=3, mlp=192, patch=8, grid=4, classes=10)


def jax_images():
    return parity.random_images(get_config("vit_test"), BATCH, seed=31)


@pytest.mark.parametrize("prefix", ["", "opt/target/"])
def test_jax_augreg_npz(tmp_path, prefix):
    a = flax_vit_arrays(**JAX_SHAPE, seed=32)
    path = write_npz(tmp_path / "S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03.npz", a, prefix)
    images = jax_images()
    oracle = flax_forward(a, images, depth=2)
    cfg, weights = assert_imports_faithfully(path, oracle, images, "jax")
    assert (cfg.num_heads, cfg.gelu, cfg.ln_eps, cfg.qkv_bias) == (3, "tanh", 1e-6, True)
    assert_converts(tmp_path, path, cfg, weights)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "per_block"])
def test_big_vision_npz(tmp_path, stacked):
    a = flax_vit_arrays(**JAX_SHAPE, seed=33, big_vision=True)
    images = jax_images()
    oracle = flax_forward(a, images, depth=2, big_vision=True)
    stored = stack_blocks(a, 2) if stacked else a
    path = write_npz(tmp_path / "vit_s32_i1k.npz", stored, "params/")
    cfg, weights = assert_imports_faithfully(path, oracle, images, "big_vision")
    # big_vision gives the class token no position embedding: imported as a zero row
    np.testing.assert_array_equal(weights["pos_embed"][0, 0], 0)
    assert_converts(tmp_path, path, cfg, weights)


def test_jax_heads_are_read_from_the_kernels(tmp_path):
    a = flax_vit_arrays(**JAX_SHAPE, seed=34)
    path = write_npz(tmp_path / "m.npz", a)
    with pytest.raises(polyvit.WeightsError, match="3 heads"):
        polyvit.import_checkpoint(path, num_heads=4)


def test_jax_gap_model_is_refused_clearly(tmp_path):
    a = flax_vit_arrays(**JAX_SHAPE, seed=35, big_vision=True)
    del a["cls"]
    path = write_npz(tmp_path / "gap.npz", a, "params/")
    with pytest.raises(polyvit.WeightsError, match="class token"):
        polyvit.import_checkpoint(path)


# ---- HF transformers ViTForImageClassification --------------------------------------------------

@pytest.fixture(scope="module")
def hf_model():
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    config = HFConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=192, image_size=32, patch_size=8, num_labels=10)
    return randomize_(ViTForImageClassification(config).eval(), seed=41)


def hf_oracle(model, images):
    """HF's own forward in float64."""
    import copy

    m = copy.deepcopy(model).double()
    with torch.no_grad():
        return m(pixel_values=torch.from_numpy(images).double()).logits.numpy()


@pytest.mark.parametrize("safetensors", [True, False], ids=["model.safetensors",
                                                            "pytorch_model.bin"])
def test_hf_folder(tmp_path, hf_model, safetensors):
    from transformers import ViTImageProcessor

    folder = tmp_path / "vit-hf"
    hf_model.save_pretrained(folder, safe_serialization=safetensors)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    images = jax_images()
    cfg, weights = assert_imports_faithfully(folder, hf_oracle(hf_model, images), images, "hf")
    assert (cfg.num_heads, cfg.ln_eps, cfg.gelu) == (3, 1e-12, "erf")
    assert (cfg.preprocessing.resize, cfg.preprocessing.interpolation) == ("squash", "bilinear")
    assert_converts(tmp_path, folder, cfg, weights)


def test_hf_tanh_gelu_and_no_qkv_bias(tmp_path):
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    config = HFConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=192, image_size=32, patch_size=8, num_labels=10,
                      hidden_act="gelu_pytorch_tanh", qkv_bias=False, layer_norm_eps=1e-6)
    model = randomize_(ViTForImageClassification(config).eval(), seed=42)
    model.save_pretrained(tmp_path / "m")
    images = jax_images()
    cfg, _ = assert_imports_faithfully(tmp_path / "m", hf_oracle(model, images), images, "hf")
    assert (cfg.gelu, cfg.qkv_bias, cfg.ln_eps) == ("tanh", False, 1e-6)


def test_hf_config_that_disagrees_with_the_tensors_is_refused(tmp_path):
    """The issue's case: config.json says 512 wide and 6 layers; the tensors are 384 and 12."""
    from transformers import ViTConfig as HFConfig
    from transformers import ViTForImageClassification

    config = HFConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                      intermediate_size=96, image_size=32, patch_size=8, num_labels=10)
    ViTForImageClassification(config).save_pretrained(tmp_path / "model")
    edit_json(tmp_path / "model" / "config.json", {"hidden_size": 512, "num_hidden_layers": 6})
    with pytest.raises(polyvit.WeightsError) as info:
        polyvit.import_checkpoint(tmp_path / "model")
    message = str(info.value)
    assert f"{tmp_path / 'model' / 'config.json'} says hidden_size 512, but the tensors are " \
           "384 wide (embeddings.patch_embeddings.projection.weight has shape (384, 3, 8, 8))" \
           in message
    assert "num_hidden_layers 6, but the tensors hold 12 blocks (encoder.layer.0.layernorm_before" \
           ".weight to encoder.layer.11.layernorm_before.weight)" in message


@pytest.mark.parametrize("changes,expected", [
    ({"intermediate_size": 96},
     r"intermediate_size 96, but the tensors have an MLP 192 wide "
     r"\(encoder\.layer\.0\.intermediate\.dense\.weight has shape \(192, 48\)\)"),
    ({"id2label": {str(i): f"class {i}" for i in range(5)}},
     r"id2label with 5 labels, but the tensors have 10 classes "
     r"\(classifier\.weight has shape \(10, 48\)\)"),
    ({"image_size": 64}, r"image_size 64, but the tensors embed 32x32 images"),
    ({"patch_size": 16}, r"patch_size 16, but the tensors embed 8x8 patches"),
    ({"num_channels": 1}, r"num_channels 1, but the tensors take 3 input channels"),
    ({"qkv_bias": False}, r"qkv_bias False, but the tensors have qkv biases "
                          r"\(encoder\.layer\.0\.attention\.attention\.query\.bias is present\)"),
    ({"num_attention_heads": 5}, r"num_attention_heads 5, but the tensors are 48 wide, which 5 "
                                 r"heads do not divide"),
], ids=["mlp", "labels", "image", "patch", "channels", "qkv_bias", "heads"])
def test_hf_config_fields_are_checked_against_the_tensors(tmp_path, hf_model, changes, expected):
    hf_model.save_pretrained(tmp_path / "m")
    edit_json(tmp_path / "m" / "config.json", changes)
    with pytest.raises(polyvit.WeightsError, match=r"config\.json says " + expected):
        polyvit.import_checkpoint(tmp_path / "m")


@pytest.mark.parametrize("changes,expected", [
    ({"num_classes": 21843}, r"num_classes 21843, but the tensors have 1000 classes "
                             r"\(head\.weight has shape \(1000, 384\)\)"),
    ({"pretrained_cfg.input_size": [3, 384, 384]},
     r"pretrained_cfg\.input_size \[3, 384, 384\], but the tensors embed 224x224 images "
     r"\(pos_embed has shape \(1, 50, 384\): a 7x7 grid of patches"),
    ({"architecture": "vit_base_patch16_224"},
     r"architecture 'vit_base_patch16_224' \(patch_size 16\), but the tensors embed 32x32 patches"
     r".*architecture 'vit_base_patch16_224' \(embed_dim 768\), but the tensors are 384 wide"),
    ({"model_args": {"depth": 8, "mlp_ratio": 2.0}},
     r"model_args\.depth 8, but the tensors hold 12 blocks.*model_args\.mlp_ratio 2\.0, but the "
     r"tensors have an MLP 1536 wide"),
], ids=["num_classes", "input_size", "architecture", "model_args"])
def test_timm_hub_config_is_checked_against_the_tensors(tmp_path, vit_s32, changes, expected):
    cfg, weights, _, _ = vit_s32
    folder = write_timm_hub_folder(tmp_path / "hub", "vit_small_patch32_224", weights,
                                   cfg.num_classes)
    edit_json(folder / "config.json", changes)
    with pytest.raises(polyvit.WeightsError, match=r"config\.json says " + expected):
        polyvit.import_checkpoint(folder)


@pytest.mark.parametrize("changes,expected", [
    ({"depth": 3}, r"depth 3, but the tensors hold 2 blocks "
                   r"\(blocks\.0\.norm1\.weight to blocks\.1\.norm1\.weight\)"),
    ({"mlp_dim": 96, "qkv_bias": False},
     r"mlp_dim 96, but the tensors have an MLP 192 wide.*qkv_bias False, but the tensors have "
     r"qkv biases"),
], ids=["depth", "mlp_and_qkv_bias"])
def test_polyvit_file_config_is_checked_against_the_tensors(tmp_path, changes, expected):
    from safetensors.numpy import save_file

    cfg = get_config("vit_test")
    path = tmp_path / "w.safetensors"
    save_file(random_weights(cfg, seed=71), path, metadata={
        "format": "polyvit", "format_version": "1", "config": cfg.replace(**changes).to_json()})
    with pytest.raises(polyvit.WeightsError, match=r"metadata says " + expected):
        polyvit.import_checkpoint(path)


# ---- the seed checkpoint (github.com/miguelmartin75/vit) ----------------------------------------

@pytest.fixture(scope="module")
def seed_model():
    return randomize_(SeedViT().eval(), seed=51)


def seed_oracle(model, images):
    import copy

    with torch.no_grad():
        return copy.deepcopy(model).double()(torch.from_numpy(images).double()).numpy()


@pytest.mark.parametrize("compiled", [False, True], ids=["plain", "_orig_mod"])
def test_seed_checkpoint(tmp_path, seed_model, compiled):
    path = tmp_path / "vit-s32-in1k.pt"
    torch.save(seed_checkpoint(seed_model, compiled=compiled), path)
    images = parity.random_images(get_config(), BATCH, seed=52)
    cfg, weights = assert_imports_faithfully(path, seed_oracle(seed_model, images), images, "seed")
    assert cfg.name == "vit_small_patch32_224_seed"
    assert (cfg.ln_eps, cfg.qkv_bias, cfg.patch_norm_pre, cfg.patch_norm_post) == \
        (1e-5, False, True, True)
    assert cfg.preprocessing.resize == "squash"
    assert_converts(tmp_path, path, cfg, weights)


def test_seed_checkpoint_in_bf16(tmp_path, seed_model):
    """A checkpoint saved after training in bf16 imports (widened to fp32)."""
    import copy

    model16 = copy.deepcopy(seed_model).to(torch.bfloat16)
    path = tmp_path / "bf16.pt"
    torch.save(seed_checkpoint(model16), path)
    images = parity.random_images(get_config(), BATCH, seed=53)
    cfg, weights, layout = polyvit.import_checkpoint(path)
    assert layout == "seed" and weights["cls_token"].dtype == np.float32
    oracle = seed_oracle(model16.float(), images)  # the same bf16 values, widened
    ours, tol = parity.reference_outputs(cfg, weights, images)
    np.testing.assert_allclose(ours, oracle, rtol=1e-9, atol=1e-9)


# ---- storage dtypes of the shared format --------------------------------------------------------

@pytest.mark.parametrize("dtype,rtol", [("fp16", 1e-3), ("bf16", 8e-3)])
def test_shared_format_in_half_precision(tmp_path, dtype, rtol):
    cfg = get_config("vit_test")
    weights = random_weights(cfg, seed=61)
    dst = tmp_path / f"w-{dtype}.safetensors"
    polyvit.weights.save(dst, cfg, weights, dtype=dtype)
    cfg2, weights2 = load_polyvit_file(dst)
    assert cfg2 == cfg
    for k in weights:
        assert weights2[k].dtype == np.float32
        np.testing.assert_allclose(weights2[k], weights[k], rtol=rtol, atol=1e-6)
