"""AdamW8bit, AdamW with its moments in 8 bits; and the bytes an optimizer's state takes.

AdamW keeps two fp32 moments per weight, 8 bytes, twice the weights themselves. AdamW8bit
stores them block-wise quantized to one byte each, as the 8-bit optimizers of Dettmers et al.
("8-bit Optimizers via Block-wise Quantization", 2022) do; the update itself is AdamW's, in
fp32, with the same hyper-parameters and param-group semantics as torch.optim.AdamW (lr, betas,
eps, weight_decay, decoupled weight decay, bias correction; an LR scheduler may change a group's
lr between steps).

The scheme
----------
A parameter's flattened elements are cut into blocks of block_size (256) consecutive elements;
the last block may be short. Each block has one fp32 scale, so one outlier only coarsens the
256 elements around it, not the whole tensor.

* First moment m (signed): int8 codes, linear, per-block absmax scale s = max|m| / 127;
  m ~= code * s, code = round(m / s) in [-127, 127], so the error is at most s/2.
* Second moment v (non-negative): uint8 codes of the fourth root, per-block max scale
  s = max(v); v ~= s * (code / 255)**4, code = round(255 * (v / s)**(1/4)). Adam divides by
  sqrt(v): a v that decodes too small (zero, worst of all) blows the update up to m / eps, so
  the code must keep v's dynamic range, which within a block spans many decades (a weight
  fed by a feature 1000x smaller than its neighbours has a v 10^6x smaller). A linear code on v
  rounds everything below max/510 to zero and diverges; a linear code on sqrt(v) reaches down
  to max/260100 but still zeroes small elements of wide-range blocks. The fourth root reaches
  v / max ~= 1.5e-11 before rounding to zero and keeps sqrt(v) within 0.4% at the block max,
  4% at v = 1e-4 max. It was measured against the alternatives on the MLP problems of
  tests/test_adamw8bit.py (300 steps) and a 2-layer TransformerEncoder on 16x16 images (200
  steps); the numbers are the distance of the weights from fp32 AdamW's, relative to how far
  fp32 AdamW moved them, with m linear int8 in every row:

      v code                       MLP      MLP, input scales 1e-3..10    tiny ViT
      fp32 (only m quantized)      -        0.55                          -
      linear on v                  6e4      4e7 (diverged)                1.7e3
      linear on sqrt(v)            0.034    6.1 (diverged)                0.040
      dynamic map (bitsandbytes)   0.032    0.44                          0.039
      fourth root (this)           0.032    0.52                          0.035

  The fourth root and bitsandbytes' dynamic exponent map are equally close (on the wide-range
  problem both are within noise of an exact fp32 v), but the root needs no code table or
  search, only sqrt and round. The error left on the wide-range problem is m's: an m under
  1/254 of its block's absmax rounds to 0 at every step, so a weight whose gradients are
  1000x smaller than its block neighbours' barely moves where AdamW would move it. Inputs of
  comparable scale (normalized pixels, LayerNorm outputs, as in a ViT) do not meet this.

Each step dequantizes a parameter's moments to fp32, applies AdamW's update exactly as
torch.optim.AdamW does (same operations, same order), uses those fp32 moments for this step's
update, then requantizes them (round to nearest). Nothing is random, and a block's max and
absmax are exact in any reduction order, so runs are deterministic.

Parameters with fewer than min_8bit_size (4096) elements keep fp32 moments and take exactly
torch.optim.AdamW's step, bit for bit. As in bitsandbytes: biases, norm scales and class tokens
are tiny in memory, their moments matter to every activation (a LayerNorm gain rescales a whole
channel), and a small tensor can be one block whose absmax is set by a single element.

Memory
------
fp32 AdamW: 8 bytes per element (+ a 4-byte step per parameter). AdamW8bit: 2 bytes of codes
plus 2 fp32 scales per block, 2 + 8/256 = 2.03 bytes per element, 0.254x, for parameters of at
least min_8bit_size elements; small ones cost 8 bytes per element as in AdamW. While a
parameter steps, its moments are dequantized and requantized through a few fp32 temporaries,
a transient peak of about 16 bytes per element of the largest parameter. optimizer_state_bytes() reports what an optimizer's state
holds (any torch optimizer), fp32_adam_state_bytes() what torch.optim.AdamW would hold.

A checkpoint round-trips exactly: state_dict() holds the codes, the scales and the step as they
are, and load_state_dict() restores each tensor with the dtype it was saved with (torch's base
class would cast the int8 codes to the parameter's dtype), so a resumed run is bit-identical to
an uninterrupted one.
"""

from __future__ import annotations

import math
import numbers
from itertools import chain
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

_M_LEVELS = 127  # int8 codes -127..127: symmetric, so -m decodes to exactly -(decoded m)
_V_LEVELS = 255  # uint8 codes 0..255


def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """A flat tensor as (num_blocks, block_size) rows, the short last block padded with zeros
    (zeros change neither an absmax nor a max)."""
    pad = -x.numel() % block_size
    return (F.pad(x, (0, pad)) if pad else x).view(-1, block_size)


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, block_size: int,
                decode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    rows = _blocks(codes.to(torch.float32), block_size)
    return (decode(rows) * scale[:, None]).view(-1)[:codes.numel()]


def quantize_absmax_int8(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat fp32 x -> (int8 codes like x, fp32 scale per block): x ~= code * scale, scale =
    the block's absmax / 127, each code rounded to nearest, so |error| <= scale / 2."""
    rows = _blocks(x, block_size)
    scale = rows.abs().amax(dim=1) / _M_LEVELS
    # An all-zero block has scale 0: divide by 1 instead, its codes are 0 either way.
    codes = torch.round(rows / torch.where(scale > 0, scale, 1.0)[:, None])
    return codes.view(-1)[:x.numel()].to(torch.int8), scale


def dequantize_absmax_int8(codes: torch.Tensor, scale: torch.Tensor,
                           block_size: int) -> torch.Tensor:
    """The flat fp32 tensor that quantize_absmax_int8's codes and scales stand for."""
    return _dequantize(codes, scale, block_size, lambda c: c)


def quantize_root4_uint8(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat non-negative fp32 x -> (uint8 codes like x, fp32 scale per block): x ~= scale *
    (code / 255)**4, scale = the block's max, code = round(255 * (x / scale)**(1/4)), so
    |x**(1/4) - decoded**(1/4)| <= scale**(1/4) / 510."""
    rows = _blocks(x, block_size)
    scale = rows.amax(dim=1)
    ratio = rows / torch.where(scale > 0, scale, 1.0)[:, None]
    codes = torch.round(ratio.sqrt().sqrt() * _V_LEVELS)
    return codes.view(-1)[:x.numel()].to(torch.uint8), scale


def dequantize_root4_uint8(codes: torch.Tensor, scale: torch.Tensor,
                           block_size: int) -> torch.Tensor:
    """The flat fp32 tensor that quantize_root4_uint8's codes and scales stand for."""
    def decode(c: torch.Tensor) -> torch.Tensor:
        root = c / _V_LEVELS
        return (root * root).square()
    return _dequantize(codes, scale, block_size, decode)


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _is_count(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_hyperparameters(group: dict) -> None:
    lr, betas, eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if not _is_number(lr) or lr < 0:
        raise ValueError(f"AdamW8bit: lr must be a finite number >= 0, got {lr!r}")
    if (not isinstance(betas, (tuple, list)) or len(betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"AdamW8bit: betas must be two numbers in [0, 1), got {betas!r}")
    if not _is_number(eps) or eps < 0:
        raise ValueError(f"AdamW8bit: eps must be a finite number >= 0, got {eps!r}")
    if not _is_number(wd) or wd < 0:
        raise ValueError(f"AdamW8bit: weight_decay must be a finite number >= 0, got {wd!r}")
    if not _is_count(group["block_size"]) or group["block_size"] < 1:
        raise ValueError("AdamW8bit: block_size must be a positive integer, got "
                         f"{group['block_size']!r}")
    if not _is_count(group["min_8bit_size"]) or group["min_8bit_size"] < 0:
        raise ValueError("AdamW8bit: min_8bit_size must be an integer >= 0, got "
                         f"{group['min_8bit_size']!r}")


class AdamW8bit(torch.optim.Optimizer):
    """torch.optim.AdamW with block-wise 8-bit moments (see the module docstring).

    lr, betas, eps, weight_decay: as torch.optim.AdamW (same defaults).
    block_size: elements per quantization block (one fp32 scale each per moment).
    min_8bit_size: parameters with fewer elements keep fp32 moments and step exactly as AdamW.
    Both may be set per param group; do not change them once the group has stepped.

    Parameters of any floating dtype are updated in fp32 and rounded back once per step.
    Sparse gradients are refused (ValueError), as are complex or integer parameters.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, block_size: int = 256,
                 min_8bit_size: int = 4096) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        block_size=block_size, min_8bit_size=min_8bit_size)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        # Checked here rather than in __init__ so a group added later, or one that overrides
        # a default, is held to the same rules.
        _check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        n = p.numel()
        state: dict[str, torch.Tensor] = {
            # A float32 scalar on the CPU, as torch.optim.AdamW keeps it, so the same bias
            # corrections come out and reading it never waits on a device.
            "step": torch.tensor(0.0, dtype=torch.float32)}
        if n < group["min_8bit_size"]:
            state["exp_avg"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
            state["exp_avg_sq"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
        else:
            blocks = -(-n // group["block_size"])
            state["exp_avg_codes"] = torch.zeros(n, dtype=torch.int8, device=p.device)
            state["exp_avg_scale"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
            state["exp_avg_sq_codes"] = torch.zeros(n, dtype=torch.uint8, device=p.device)
            state["exp_avg_sq_scale"] = torch.zeros(blocks, dtype=torch.float32,
                                                    device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("AdamW8bit does not support sparse gradients (e.g. "
                                     "nn.Embedding(sparse=True)); use dense gradients or "
                                     "torch.optim.SparseAdam")
                if not p.is_floating_point():
                    raise ValueError(f"AdamW8bit updates floating-point parameters only, got "
                                     f"a {p.dtype} parameter of shape {tuple(p.shape)}")
                state = self.state[p]
                if not state:
                    state.update(self._init_state(p, group))
                self._step_param(p, state, group)
        return loss

    def _step_param(self, p: torch.Tensor, state: dict, group: dict) -> None:
        quantized = "exp_avg_codes" in state
        block_size = group["block_size"]
        if quantized and state["exp_avg_scale"].numel() != -(-p.numel() // block_size):
            raise ValueError(f"AdamW8bit: the state of a parameter of {p.numel()} elements has "
                             f"{state['exp_avg_scale'].numel()} blocks, not the "
                             f"{-(-p.numel() // block_size)} of block_size {block_size}; "
                             "block_size cannot change once a group has stepped")
        # fp32 contiguous parameters are updated in place; others through an fp32 copy that is
        # rounded back once, so a bf16 weight is not rounded after every sub-operation.
        in_place = p.dtype == torch.float32 and p.is_contiguous()
        work = p if in_place else p.to(torch.float32, memory_format=torch.contiguous_format)
        grad = p.grad.to(torch.float32)
        if quantized:
            work, grad = work.view(-1), grad.reshape(-1)
            exp_avg = dequantize_absmax_int8(state["exp_avg_codes"], state["exp_avg_scale"],
                                             block_size)
            exp_avg_sq = dequantize_root4_uint8(state["exp_avg_sq_codes"],
                                                state["exp_avg_sq_scale"], block_size)
        else:
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

        # torch.optim.AdamW's single-tensor step, operation for operation, so that fp32 state
        # gives its result bit for bit.
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], \
            group["weight_decay"]
        state["step"] += 1
        if wd != 0:
            work.mul_(1 - lr * wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = state["step"].item()
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(eps)
        work.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))

        if quantized:
            state["exp_avg_codes"], state["exp_avg_scale"] = quantize_absmax_int8(
                exp_avg, block_size)
            state["exp_avg_sq_codes"], state["exp_avg_sq_scale"] = quantize_root4_uint8(
                exp_avg_sq, block_size)
        if not in_place:
            p.copy_(work.view_as(p))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # The base class casts every state tensor to its parameter's dtype (int8 codes would
        # become float) and hands back the saved step tensor itself. Put back a copy of each
        # saved tensor with its own dtype instead, on the parameter's device (the step stays on
        # the CPU, where it was created).
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if saved is None:
                continue
            self.state[p] = {
                key: (value.clone() if key == "step" else value.to(p.device, copy=True))
                if torch.is_tensor(value) else value
                for key, value in saved.items()}
            codes = self.state[p].get("exp_avg_codes")
            if codes is not None and codes.numel() != p.numel():
                raise ValueError(f"AdamW8bit: the loaded state has {codes.numel()} codes for a "
                                 f"parameter of {p.numel()} elements; the checkpoint belongs "
                                 "to another model")


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor held in an optimizer's per-parameter state (any torch optimizer,
    e.g. torch.optim.AdamW or AdamW8bit); parameters that never stepped hold none."""
    return sum(value.numel() * value.element_size()
               for state in optimizer.state.values() for value in state.values()
               if torch.is_tensor(value))


def fp32_adam_state_bytes(params: Iterable) -> int:
    """Bytes torch.optim.AdamW's state would take for these parameters once each has stepped:
    two fp32 moments per element and a 4-byte step per parameter. params: tensors or param
    group dicts, as an optimizer takes; frozen ones (requires_grad False) never get state and
    are not counted."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [p for group in params for p in group["params"]]
    return sum(2 * 4 * p.numel() + 4 for p in params if p.requires_grad)
