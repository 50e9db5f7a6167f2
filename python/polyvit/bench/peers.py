"""The peers polyvit is measured against, on the same weights: torch eager (an idiomatic torch
ViT, as timm writes it: conv patch embedding, F.layer_norm, SDPA), torch.compile, ONNX Runtime
and OpenVINO (both on an ONNX export of that torch model). Each is optional: a missing package
makes its runner unavailable with the reason, never an error."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Callable, Mapping

import numpy as np

from ..config import ViTConfig

Fn = Callable[[np.ndarray], np.ndarray]


def idiomatic_torch_vit(cfg: ViTConfig, weights: Mapping[str, np.ndarray]):
    """A torch.nn.Module computing the same ViT with torch's fused building blocks."""
    import torch
    import torch.nn.functional as F

    class TorchViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for key, value in weights.items():
                self.register_buffer(key.replace(".", "__"), torch.from_numpy(np.array(value)))

        def w(self, key: str):
            return getattr(self, key.replace(".", "__"))

        def forward(self, x):
            d, h, p = cfg.embed_dim, cfg.num_heads, cfg.patch_size
            b = x.shape[0]
            if cfg.patch_norm_pre:  # LayerNorm over each flattened patch: unfold, then linear
                x = F.unfold(x, p, stride=p).transpose(1, 2)               # (B, N, C*P*P)
                x = F.layer_norm(x, (cfg.patch_dim,), self.w("patch_embed.norm_pre.weight"),
                                 self.w("patch_embed.norm_pre.bias"), cfg.ln_eps)
                x = F.linear(x, self.w("patch_embed.proj.weight").reshape(d, -1),
                             self.w("patch_embed.proj.bias"))
            else:
                x = F.conv2d(x, self.w("patch_embed.proj.weight"), self.w("patch_embed.proj.bias"),
                             stride=p).flatten(2).transpose(1, 2)          # (B, N, D)
            if cfg.patch_norm_post:
                x = F.layer_norm(x, (d,), self.w("patch_embed.norm.weight"),
                                 self.w("patch_embed.norm.bias"), cfg.ln_eps)
            x = torch.cat([self.w("cls_token").expand(b, -1, -1), x], 1) + self.w("pos_embed")
            for i in range(cfg.depth):
                k = f"blocks.{i}."
                y = F.layer_norm(x, (d,), self.w(k + "norm1.weight"), self.w(k + "norm1.bias"),
                                 cfg.ln_eps)
                bias = self.w(k + "attn.qkv.bias") if cfg.qkv_bias else None
                q, kk, v = F.linear(y, self.w(k + "attn.qkv.weight"), bias) \
                    .reshape(b, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
                y = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(b, -1, d)
                x = x + F.linear(y, self.w(k + "attn.proj.weight"), self.w(k + "attn.proj.bias"))
                y = F.layer_norm(x, (d,), self.w(k + "norm2.weight"), self.w(k + "norm2.bias"),
                                 cfg.ln_eps)
                y = F.gelu(F.linear(y, self.w(k + "mlp.fc1.weight"), self.w(k + "mlp.fc1.bias")),
                           approximate="none" if cfg.gelu == "erf" else "tanh")
                x = x + F.linear(y, self.w(k + "mlp.fc2.weight"), self.w(k + "mlp.fc2.bias"))
            x = F.layer_norm(x[:, 0], (d,), self.w("norm.weight"), self.w("norm.bias"), cfg.ln_eps)
            return F.linear(x, self.w("head.weight"), self.w("head.bias"))

    return TorchViT().eval()


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ---- builders: each returns a callable numpy -> numpy logits ------------------------------------

def torch_eager(model, precision: str, threads: int) -> Fn:
    import torch

    torch.set_num_threads(threads)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                    enabled=precision == "bf16"):
            return model(torch.from_numpy(x)).float().numpy()
    return run


def torch_compiled(model, precision: str, threads: int) -> Fn:
    import torch
    import torch._inductor.config as inductor

    torch.set_num_threads(threads)
    inductor.freezing = True  # weights become constants, as in deployment
    compiled = torch.compile(model)
    return torch_eager(compiled, precision, threads)


class OnnxExport:
    """One ONNX export of the torch model per sweep, shared by ONNX Runtime and OpenVINO."""

    def __init__(self, model, cfg: ViTConfig):
        self.model, self.cfg = model, cfg
        self._dir: tempfile.TemporaryDirectory | None = None

    def path(self) -> str:
        if self._dir is None:
            import logging
            import warnings

            import torch

            self._dir = tempfile.TemporaryDirectory(prefix="polyvit-bench-")
            x = torch.zeros(1, self.cfg.in_chans, self.cfg.image_size, self.cfg.image_size)
            batch = torch.export.Dim("batch", min=1, max=4096)
            quiet = logging.getLogger("torch.onnx")
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # the exporter logs every op it cannot map, unused here
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(self.model, (x,), self._file(), dynamo=True, verbose=False,
                                      dynamic_shapes={"x": {0: batch}}, external_data=False)
            finally:
                quiet.setLevel(level)
        return self._file()

    def _file(self) -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, "vit.onnx")


def onnxruntime(export: OnnxExport, precision: str, threads: int) -> Fn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(export.path(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino(export: OnnxExport, precision: str, threads: int) -> Fn:
    import openvino as ov

    hint = {"fp32": "f32", "bf16": "bf16"}[precision]
    compiled = ov.Core().compile_model(export.path(), "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda x: np.asarray(next(iter(request.infer({0: x}).values())), dtype=np.float32)


# (name, modules it needs, precisions, builder, needs the ONNX export, costly to set up)
PEERS = [
    ("torch eager", ("torch",), ("fp32", "bf16"), torch_eager, False, False),
    ("torch.compile", ("torch",), ("fp32", "bf16"), torch_compiled, False, True),
    ("onnxruntime", ("onnxruntime", "onnxscript"), ("fp32",), onnxruntime, True, False),
    ("openvino", ("openvino", "onnxscript"), ("fp32", "bf16"), openvino, True, False),
]
