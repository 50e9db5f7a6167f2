"""The Mojo backend's C ABI: the kernels check their own arguments (each status triggered on
purpose), and the weight table and config layout Python generates for them: one table of slot
names from weights.expected_shapes, the generated Mojo constants, the hash the library returns,
and the checks of the table at load and at every forward. Accuracy (the variants with empty slots
included), options, threads, batch caches and concurrency are the shared suites' (test_ops,
test_parity, test_backend_contract)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import polyvit
from polyvit import BackendError, parity
from polyvit.backends import mojo_build
from polyvit.config import get_config
from polyvit.weights import expected_shapes, random_weights

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}
CFG = get_config("vit_test")
# every optional tensor absent, the other GELU form, a different eps
BARE = CFG.replace(qkv_bias=False, gelu="tanh", ln_eps=1e-5)
FULL = CFG.replace(patch_norm_pre=True, patch_norm_post=True)


@pytest.fixture(scope="module")
def k():
    from polyvit.backends.mojo_backend import MojoBackend, kernels

    ok, reason = MojoBackend.availability()
    if not ok:
        if "mojo" in REQUIRED:
            pytest.fail(f"backend mojo is required here but unavailable: {reason}")
        pytest.skip(f"backend mojo unavailable: {reason}")
    return kernels()


@pytest.fixture(scope="module")
def images():
    return parity.random_images(CFG, 2, seed=4)


# ---- the layout: one table in Python, generated into Mojo -------------------------------------


def test_the_slots_are_the_shared_formats_names():
    """Every tensor of every variant has exactly one slot; the table is expected_shapes' order."""
    from polyvit.backends.mojo_backend import weight_table

    first, block, last = mojo_build.weight_slots()
    for cfg in (CFG, BARE, FULL):
        names = [*first, *(f"blocks.{i}.{n}" for i in range(cfg.depth) for n in block), *last]
        assert len(set(names)) == len(names)
        expected = list(expected_shapes(cfg))
        assert [n for n in names if n in expected] == expected  # same order, none missing
        keep, table = weight_table(cfg, random_weights(cfg), nr=16)
        pairs = table.reshape(-1, 2)
        assert len(pairs) == len(names)
        for name, (address, floats) in zip(names, pairs):
            assert (floats > 0 and address != 0) == (name in expected), name
            assert (floats, address) != (0, 0) or name not in expected


def test_the_generated_source_names_every_slot_and_field():
    text = mojo_build.layout_source()
    consts = dict((n, int(v)) for n, v in re.findall(r"^comptime (\w+) = (\d+)", text, re.M))
    first, block, last = mojo_build.weight_slots()
    for prefix, names in (("SLOT_", first), ("BLOCK_", block), ("LAST_", last)):
        for i, name in enumerate(names):
            assert consts[prefix + re.sub(r"\W", "_", name.upper())] == i
    assert (consts["FIRST_SLOTS"], consts["BLOCK_SLOTS"], consts["LAST_SLOTS"]) == \
        (len(first), len(block), len(last))
    for i, field in enumerate(mojo_build.config_slots()):
        assert consts["CFG_" + field.upper()] == i
    assert consts["CFG_LEN"] == len(mojo_build.config_slots())
    assert consts["EPI_RESIDUAL"] == 3 and consts["GELU_TANH"] == 1
    assert consts["LAYOUT_HASH"] == mojo_build.layout_hash()


def test_the_config_array_is_every_model_field():
    array = mojo_build.config_array(BARE)
    fields = dict(zip(mojo_build.config_slots(), array.tolist()))
    assert fields["embed_dim"] == BARE.embed_dim and fields["qkv_bias"] == 0
    assert fields["gelu"] == 1
    assert np.int64(fields["ln_eps"]).view(np.float64) == BARE.ln_eps


def test_the_library_speaks_this_layout(k):
    assert k._lib.polyvit_layout_hash() == mojo_build.layout_hash()


# ---- the weight table and config, checked by the kernels --------------------------------------


def test_the_table_is_checked_at_load(k):
    from polyvit.backends.mojo_backend import _address, weight_table

    config = mojo_build.config_array(CFG)
    keep, table = weight_table(CFG, random_weights(CFG), k.nr)

    def check(table=table, config=config):
        return k.call("polyvit_vit_check_weights", _address(config), config.size,
                      _address(table), table.size)

    assert check() == 0
    with pytest.raises(BackendError, match="'weights_len': a weight table that does not match"):
        check(table=np.ascontiguousarray(table[:-2]))
    first = mojo_build.weight_slots()[0]
    proj, proj_bias, norm_pre = (first.index(f"patch_embed.{n}")
                                 for n in ("proj.weight", "proj.bias", "norm_pre.weight"))
    for slot, pair in [(proj, (table[2 * proj], table[2 * proj + 1] - 1)),  # one float short
                       (proj_bias, (0, table[2 * proj_bias + 1])),         # a null address
                       (norm_pre, (table[2 * proj], CFG.patch_dim))]:      # filled, yet off
        bad = table.copy()
        bad[2 * slot:2 * slot + 2] = pair
        with pytest.raises(BackendError, match="'weights': a weight table that does not match"):
            check(table=bad)
    bare = mojo_build.config_array(CFG.replace(qkv_bias=False))  # its qkv biases must be empty
    with pytest.raises(BackendError, match="'weights': a weight table that does not match"):
        check(config=bare)
    odd = config.copy()
    odd[mojo_build.config_slots().index("embed_dim")] = 47  # not divisible by the heads
    with pytest.raises(BackendError, match="'config': an inconsistent config"):
        check(config=odd)
    with pytest.raises(BackendError, match="'config_len': a buffer smaller"):
        check(config=np.ascontiguousarray(config[:-1]))


def test_every_forward_checks_the_table_again(k, images):
    model = polyvit.load(random_weights(CFG, seed=3), backend="mojo", config=CFG, threads=2)
    impl = model.impl
    good = impl._table.copy()
    proj = mojo_build.weight_slots()[0].index("patch_embed.proj.weight")
    impl._table[2 * proj + 1] -= 1  # the patch projection claims one float fewer than it needs
    with pytest.raises(BackendError, match="'weights': a weight table that does not match"):
        model(images)
    impl._table[:] = good
    eps = mojo_build.config_slots().index("ln_eps")
    impl._config[eps] = np.float64(-1.0).view(np.int64)
    with pytest.raises(BackendError, match="'config': an inconsistent config"):
        model(images)
    impl._config[eps] = np.float64(CFG.ln_eps).view(np.int64)
    assert model(images).shape == (2, CFG.num_classes)


# ---- the single ops' C ABI checks its own arguments -------------------------------------------


def test_linear_checks_its_arguments(k):
    from polyvit.backends._native import pack_panels, pad_vector

    x = np.ones((4, 8), np.float32)
    packed = pack_panels(np.ones((6, 8), np.float32), k.nr)
    bias = pad_vector(None, 6, k.nr)
    out = np.empty((4, 6), np.float32)

    def linear(**change):
        args = dict(epilogue=0, x=x.ctypes.data, x_len=x.size, weight=packed.ctypes.data,
                    weight_len=packed.size, bias=bias.ctypes.data, bias_len=bias.size,
                    out=out.ctypes.data, out_len=out.size, residual=0, residual_len=0, m=4, n=6,
                    k=8, tid=0, nthreads=1)
        args.update(change)
        return k.call("polyvit_linear", *args.values())

    assert linear() == 0
    np.testing.assert_allclose(out, 8.0)
    for change, message in [
        (dict(out_len=23), "'out': a buffer smaller"),
        (dict(m=5), "'x': a buffer smaller"),          # x holds 4 rows, not 5
        (dict(weight_len=10), "'weight': a buffer smaller"),
        (dict(bias_len=5), "'bias': a buffer smaller"),  # the bias is padded to whole panels
        (dict(x=0), "'x': a null address"),
        (dict(k=0), "'k': a dimension"),
        (dict(n=-3), "'n': a dimension"),
        (dict(epilogue=3), "'residual': a null address"),  # residual epilogue without residual
        (dict(epilogue=9), "'epilogue': an unknown"),
        (dict(tid=1), "'tid': a thread index"),
        (dict(nthreads=0), "'tid': a thread index"),
    ]:
        with pytest.raises(BackendError, match=message):
            linear(**change)


def test_patch_embed_checks_its_arguments(k):
    from polyvit.backends._native import aligned_empty, pack_panels, pad_vector

    images = np.ones((2, 3, 8, 8), np.float32)
    packed = pack_panels(np.ones((5, 48), np.float32), k.nr)  # D 5, C * P * P = 3 * 4 * 4
    bias = pad_vector(np.arange(5, dtype=np.float32), 5, k.nr)
    out = np.empty((2, 4, 5), np.float32)
    patches = aligned_empty(8 * 48)
    state = np.zeros(2, np.int64)

    def patch_embed(**change):
        args = dict(images=images.ctypes.data, images_len=images.size,
                    weight=packed.ctypes.data, weight_len=packed.size, bias=bias.ctypes.data,
                    bias_len=bias.size, out=out.ctypes.data, out_len=out.size,
                    patches=patches.ctypes.data, patches_len=patches.size,
                    state=state.ctypes.data, state_len=state.size, b=2, c=3, h=8, w=8, p=4, d=5,
                    tid=0, nthreads=1)
        args.update(change)
        return k.call("polyvit_patch_embed", *args.values())

    assert patch_embed() == 0
    np.testing.assert_array_equal(out, np.broadcast_to(48.0 + np.arange(5), out.shape))
    for change, message in [
        (dict(p=3), "'p': a dimension"),                 # 3 does not tile 8
        (dict(h=12), "'images': a buffer smaller"),
        (dict(patches_len=8 * 48 - 1), "'patches': a buffer smaller"),
        (dict(state=0), "'state': a null address"),
        (dict(state_len=1), "'state': a buffer smaller"),
        (dict(out_len=39), "'out': a buffer smaller"),
        (dict(d=0), "'d': a dimension"),
        (dict(tid=2, nthreads=2), "'tid': a thread index"),
    ]:
        with pytest.raises(BackendError, match=message):
            patch_embed(**change)


def test_the_other_ops_check_their_arguments(k):
    x = np.ones((4, 8), np.float32)
    ones = np.ones(8, np.float32)
    out = np.empty_like(x)
    with pytest.raises(BackendError, match="'form': an unknown epilogue or GELU form"):
        k.call("polyvit_bias_gelu", 2, x.ctypes.data, x.size, ones.ctypes.data, 8,
               out.ctypes.data, out.size, 4, 8, 0, 1)
    with pytest.raises(BackendError, match="'bias': a buffer smaller"):
        k.call("polyvit_bias_gelu", 0, x.ctypes.data, x.size, ones.ctypes.data, 7,
               out.ctypes.data, out.size, 4, 8, 0, 1)
    with pytest.raises(BackendError, match="'eps': a dimension"):
        k.call("polyvit_layernorm", x.ctypes.data, x.size, ones.ctypes.data, 8,
               ones.ctypes.data, 8, out.ctypes.data, out.size, 4, 8, 0.0, 0, 1)
    qkv = np.ones((1, 5, 12), np.float32)
    y = np.empty((1, 5, 4), np.float32)
    with pytest.raises(BackendError, match="'heads': a dimension"):
        k.call("polyvit_attention", qkv.ctypes.data, qkv.size, y.ctypes.data, y.size,
               y.ctypes.data, y.size, 1, 5, 4, 3, 0, 1)
    with pytest.raises(BackendError, match="'scratch': a buffer smaller"):
        k.call("polyvit_attention", qkv.ctypes.data, qkv.size, y.ctypes.data, y.size,
               y.ctypes.data, 1, 1, 5, 4, 2, 0, 1)
