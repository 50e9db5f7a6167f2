"""The trainable ViT is the reference forward with autograd: in eval mode its logits pass the
fp32 parity rule against the float64 reference, on every architecture flag the importers
produce; its state dict is the shared weight format; the recipe's config refuses bad keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyvit import parity
from polyvit.config import ViTConfig, get_config
from polyvit.errors import ConfigError, WeightsError
from polyvit.training.config import TrainConfig
from polyvit.training.model import TrainableViT, no_weight_decay
from polyvit.training.schedule import warmup_cosine
from polyvit.weights import expected_shapes, random_weights

CONFIGS = {
    "vit_test": get_config("vit_test"),
    "vit_digits": get_config("vit_digits"),
    # the seed layout: patch norms before and after the projection, no qkv bias, eps 1e-5
    "seed_flags": get_config("vit_test").replace(
        ln_eps=1e-5, qkv_bias=False, patch_norm_pre=True, patch_norm_post=True),
    "gelu_tanh": get_config("vit_test").replace(gelu="tanh"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_eval_logits_pass_fp32_parity_against_the_reference(name: str) -> None:
    cfg = CONFIGS[name]
    weights = random_weights(cfg, seed=3)
    images = parity.random_images(cfg, 4, seed=1)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    model = TrainableViT.from_weights(cfg, weights, drop=0.3, attn_drop=0.3, drop_path=0.3).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images)).numpy()
    result = parity.compare(logits, oracle, tol)
    assert result.passed, result.describe()


def test_training_mode_applies_dropout_and_eval_mode_does_not() -> None:
    cfg = CONFIGS["vit_test"]
    model = TrainableViT.from_weights(cfg, random_weights(cfg, 0), drop=0.2, drop_path=0.2)
    x = torch.from_numpy(parity.random_images(cfg, 2))
    model.train()
    a, b = model(x), model(x)
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_state_dict_is_the_shared_weight_format() -> None:
    cfg = CONFIGS["seed_flags"]
    weights = random_weights(cfg, seed=5)
    model = TrainableViT.from_weights(cfg, weights)
    assert set(model.state_dict()) == set(expected_shapes(cfg))
    out = model.export_weights()
    assert set(out) == set(weights)
    for k in weights:
        np.testing.assert_array_equal(out[k], weights[k], err_msg=k)


def test_from_weights_names_a_missing_tensor() -> None:
    cfg = CONFIGS["vit_test"]
    weights = random_weights(cfg)
    del weights["blocks.1.mlp.fc2.bias"]
    with pytest.raises(WeightsError, match="blocks.1.mlp.fc2.bias"):
        TrainableViT.from_weights(cfg, weights)


def test_gradients_reach_every_parameter() -> None:
    cfg = CONFIGS["seed_flags"]
    model = TrainableViT(cfg)
    x = torch.from_numpy(parity.random_images(cfg, 2))
    model(x).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_no_weight_decay_on_norms_biases_and_embeddings() -> None:
    model = TrainableViT(CONFIGS["vit_test"])
    exempt = sorted(n for n, p in model.named_parameters() if no_weight_decay(n, p))
    decayed = sorted(n for n, p in model.named_parameters() if not no_weight_decay(n, p))
    assert "cls_token" in exempt and "pos_embed" in exempt and "blocks.0.norm1.weight" in exempt
    assert all(n.endswith(".weight") for n in decayed)
    assert "head.weight" in decayed and "blocks.0.attn.qkv.weight" in decayed
    assert not any("norm" in n for n in decayed)


def test_warmup_then_half_cosine_to_zero() -> None:
    warm, total = 10, 110
    values = [warmup_cosine(s, warm, total) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[warm - 1] == pytest.approx(1.0)
    assert values[warm] == pytest.approx(1.0)
    assert values[warm + 50] == pytest.approx(0.5)                     # halfway down
    assert warmup_cosine(total, warm, total) == pytest.approx(0.0)     # reaches 0 at the end
    assert all(a >= b for a, b in zip(values[warm:], values[warm + 1:]))


def test_unknown_config_key_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rate'.*\blr\b"):
        TrainConfig().override(["learning_rate=0.1"])


@pytest.mark.parametrize("assignment, message", [
    ("epochs=0", "epochs"), ("lr=-1", "lr"), ("optimizer=sgd", "optimizer"),
    ("amp=fp8", "amp"), ("compile=maybe", "true or false"), ("batch_size=64.5", "integer"),
    ("batch_size=60", None), ("accum_steps=7", "multiple"), ("crop_scale=0", "crop_scale"),
    ("nokey", "key=value"),
])
def test_bad_config_values_are_refused(assignment: str, message: str | None) -> None:
    if message is None:
        cfg, named = TrainConfig().override([assignment])
        assert cfg.batch_size == 60 and named == {"batch_size"}
        return
    with pytest.raises(ConfigError, match=message):
        TrainConfig().override([assignment])


def test_config_round_trips_through_json() -> None:
    cfg, _ = TrainConfig().override(["lr=0.01", "mixup=0.8", "tensorboard=false"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert "lr" in cfg.differences(TrainConfig())


def test_bf16_autocast_on_the_cpu_stays_close_to_fp32() -> None:
    """Under CPU bf16 autocast the attention is written out (faster there than torch's SDPA);
    its logits stay within bf16's rounding of the fp32 ones."""
    cfg = CONFIGS["vit_digits"]
    model = TrainableViT.from_weights(cfg, random_weights(cfg, 4)).eval()
    x = torch.from_numpy(parity.random_images(cfg, 8))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    cosine = torch.nn.functional.cosine_similarity(ref, low, dim=-1)
    assert cosine.min() > 0.999 and torch.equal(ref.argmax(-1), low.argmax(-1))
