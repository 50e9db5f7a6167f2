"""Backend "cuda": hand-written CUDA kernels (the extension polyvit._cuda), one CUDA graph per
batch size.

fp32 runs every linear on CUDA cores in fp32 (no TF32): the parity precision. bf16 and fp16 run
the linears on tensor cores with fp32 accumulation; LayerNorm, softmax, biases and the residual
stream stay fp32. See docs/backends/cuda.md.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from ._native import BATCH_SIZES_KEPT, config_fields
from .base import (Backend, Ops, check_images, cuda_device_index, cuda_device_option,
                   flag_option, missing_cuda_device)

BUILD_HINT = ("install polyvit where the CUDA toolkit is (nvcc on PATH, e.g. /usr/local/cuda/bin): "
              "POLYVIT_CUDA=ON pip install --no-build-isolation -e .")
OUTPUTS = ("numpy", "device")
DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def _module():
    from .. import _cuda

    return _cuda


device_index = cuda_device_index  # "3" and "cuda:3" -> 3, "cuda" -> 0


class CudaBackend(Backend):
    name = "cuda"
    precisions = ("fp32", "bf16", "fp16")
    option_specs = (
        cuda_device_option("the CUDA device: its index, 'cuda:<index>', or 'cuda' (device 0)"),
        flag_option("cuda_graph", True, "capture each batch size's forward once as a CUDA graph "
                                        "and replay it (False: launch kernel by kernel)"),
    )

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            cuda = _module()
        except ImportError as exc:
            return False, f"polyvit._cuda is not built ({exc}); {BUILD_HINT}"
        info = cuda.probe()  # computed once per process by the extension
        if info["count"] == 0:
            return False, f"no CUDA device: {info['error']}"
        device = info["devices"][0]
        major, minor = device["compute_capability"]
        if major < 8:
            return False, (f"CUDA device 0 ({device['name']}) has compute capability {major}.{minor}; "
                           f"the kernels are built for 8.0 and newer ({cuda.architectures})")
        return True, ""

    @classmethod
    def supports(cls, precision: str, device: str = "cuda:0", **options: Any) -> tuple[bool, str]:
        """Every precision runs on every device the backend is available on (sm_80 and newer);
        a device index this machine does not have is refused here."""
        try:
            info = _module().probe()
        except ImportError as exc:
            return False, f"polyvit._cuda is not built ({exc}); {BUILD_HINT}"
        count = info["count"]
        if count == 0:
            return False, f"no CUDA device: {info['error']}"
        why = missing_cuda_device("cuda", device, count)
        return (False, why) if why else (True, "")

    @classmethod
    def make_ops(cls, precision: str, device: str, cuda_graph: bool) -> "CudaOps":
        return CudaOps(precision, device_index(device))

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        """options: device ("0", "cuda:0" or "cuda"; default "cuda:0"); cuda_graph (default
        True: capture each batch size's forward once and replay it; False launches kernel by
        kernel)."""
        super().__init__(config, weights, precision, **options)
        try:
            cuda = _module()
        except ImportError as exc:
            raise BackendError(f"polyvit._cuda is not built ({exc}); {BUILD_HINT}") from None
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        try:
            self._model = cuda.Model(config_fields(config), arrays, precision,
                                     device_index(self.options["device"]),
                                     self.options["cuda_graph"], BATCH_SIZES_KEPT)
        except cuda.CudaError as exc:
            raise BackendError(f"backend 'cuda' cannot load the model: {exc}") from exc

    def forward(self, images: np.ndarray) -> np.ndarray:
        return self._model.run(images, "numpy")

    def run(self, images: Any, output: str = "numpy"):
        """Logits of images (B, C, H, W) float32: a numpy array, or a CUDA array read in place
        (a torch CUDA tensor, a CuPy array: anything with __cuda_array_interface__ or __dlpack__).
        output="numpy" returns a numpy array; output="device" a polyvit._cuda.DeviceArray on the
        model's device, which torch.as_tensor(a, device="cuda"), torch.from_dlpack(a) and
        cupy.asarray(a) take without a copy."""
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if not _in_cuda_memory(images):
            images = check_images(images, self.config)
        return self._model.run(images, output)

    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes whose buffers and CUDA graph are kept, least recently used first (the
        BATCH_SIZES_KEPT most recently used)."""
        return self._model.cached_batch_sizes()

    def clear_cache(self) -> None:
        """Frees every batch size's buffers and graph; the weights stay on the device."""
        self._model.clear_cache()


def _in_cuda_memory(images: Any) -> bool:
    """Whether images live on a CUDA device (read in place) rather than in host memory."""
    if isinstance(images, np.ndarray):
        return False
    if hasattr(images, "__cuda_array_interface__"):  # torch CPU tensors raise AttributeError
        return True
    try:
        return images.__dlpack_device__()[0] in DLPACK_CUDA_DEVICES
    except (AttributeError, TypeError):
        return False


class CudaOps(Ops):
    """The single ops on one device, float32 numpy in and out. In bf16/fp16 the inputs of
    linear, attention and patch_embed, and the outputs of layernorm and attention, are rounded
    to that type on the device (linear and patch_embed return their fp32 epilogue): the
    tensor-core paths op by op, as the forward runs them. bias_gelu is the standalone fp32
    kernel in every precision (the forward fuses it into fc1's epilogue)."""

    def __init__(self, precision: str = "fp32", device: int = 0) -> None:
        super().__init__(precision)
        self.device = device

    def _linear(self, x, weight, bias, epilogue, residual):
        return _module().linear(x, weight, bias, epilogue, residual, self.precision, self.device)

    def _layernorm(self, x, weight, bias, eps):
        return _module().layernorm(x, weight, bias, eps, self.precision, self.device)

    def _attention(self, qkv, num_heads):
        return _module().attention(qkv, num_heads, self.precision, None, self.device)

    def _bias_gelu(self, x, bias, form):
        return _module().bias_gelu(x, bias, form, self.device)

    def _patch_embed(self, images, weight, bias):
        return _module().patch_embed(images, weight, bias, self.precision, self.device)

    def attention_class_query(self, qkv, num_heads: int) -> np.ndarray:
        """qkv (B, T, 3D) -> (B, 1, D): the class token's query alone against every key, by the
        kernel path the last block runs (reference.attention(qkv, heads, queries=1))."""
        qkv = self._check("qkv", qkv, (None, None, None))
        return _module().attention(qkv, num_heads, self.precision, 1, self.device)
