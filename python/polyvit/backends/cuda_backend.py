"""Backend "cuda": hand-written CUDA kernels (the extension polyvit._cuda), one CUDA graph per
batch size.

fp32 runs every matmul on CUDA cores in fp32 (no TF32): the parity precision. bf16 and fp16 run
the matmuls on tensor cores with fp32 accumulation; LayerNorm, softmax, biases and the residual
stream stay fp32. See docs/backends/cuda.md.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from .base import LINEAR_EPILOGUES, Backend, check_images

BUILD_HINT = ("install polyvit where the CUDA toolkit is (nvcc on PATH, e.g. /usr/local/cuda/bin): "
              "POLYVIT_CUDA=ON pip install --no-build-isolation -e .")
OUTPUTS = ("numpy", "device")
DLPACK_CUDA_DEVICES = (2, 13)  # kDLCUDA, kDLCUDAManaged


def _module():
    from .. import _cuda

    return _cuda


class CudaBackend(Backend):
    name = "cuda"
    precisions = ("fp32", "bf16", "fp16")
    options = ("device", "cuda_graph")

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
    def ops(cls) -> "CudaOps":
        return CudaOps()

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        """options: device (CUDA device index, default 0); cuda_graph (default True: capture each
        batch size's forward once and replay it; False launches kernel by kernel)."""
        super().__init__(config, weights, precision, **options)
        device = options.get("device", 0)
        cuda_graph = options.get("cuda_graph", True)
        if not isinstance(device, int) or isinstance(device, bool) or device < 0:
            raise BackendError(f"device must be a CUDA device index (0, 1, ...), got {device!r}")
        if not isinstance(cuda_graph, bool):
            raise BackendError(f"cuda_graph must be True or False, got {cuda_graph!r}")
        try:
            cuda = _module()
        except ImportError as exc:
            raise BackendError(f"polyvit._cuda is not built ({exc}); {BUILD_HINT}") from None
        fields = {k: v for k, v in config.to_dict().items() if k != "preprocessing"}
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        try:
            self._model = cuda.Model(fields, arrays, precision, device, cuda_graph)
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
        """Batch sizes whose buffers and CUDA graph are ready (the 8 most recently used)."""
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


class CudaOps:
    """The single ops on device 0, float32 numpy in and out. precision "bf16"/"fp16" rounds the
    inputs of linear and attention, and the outputs of layernorm and attention, to that type on
    the device (linear always returns its fp32 epilogue): the tensor-core paths op by op."""

    def __init__(self, precision: str = "fp32") -> None:
        if precision not in CudaBackend.precisions:
            raise ValueError(f"precision must be one of {CudaBackend.precisions}, got {precision!r}")
        self.precision = precision

    def linear(self, x, weight, bias, epilogue="none", residual=None):
        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")
        return _module().linear(x, weight, bias, epilogue, residual, self.precision)

    def layernorm(self, x, weight, bias, eps):
        return _module().layernorm(x, weight, bias, float(eps), self.precision)

    def attention(self, qkv, num_heads):
        return _module().attention(qkv, int(num_heads), self.precision)

    def bias_gelu(self, x, bias, form="erf"):
        return _module().bias_gelu(x, bias, form)
