"""TritonBackend: the contract of polyvit.backends.base for the Triton kernels.

Where the kernels run is decided when they are first imported: compiled for a CUDA GPU, or run
by Triton's interpreter on CPU tensors when TRITON_INTERPRET=1 (CI; slow, for tests). fp32
keeps IEEE fp32 products (tl.dot's input_precision="ieee"; Triton's own default on a GPU is
TF32), so it is held to the fp32 parity rule. "tf32" is the explicit TF32 precision; bf16 and
fp16 run the GEMMs on tensor cores with fp32 accumulation. The interpreter computes with numpy:
it has no bf16 arithmetic and no TF32, so there only fp32 and fp16 run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Mapping

import numpy as np

from ...config import ViTConfig
from ...errors import BackendError
from ..base import (Backend, Ops, cuda_device_index, cuda_device_option, flag_option,
                    missing_cuda_device)

KERNEL_MODULE = "polyvit.backends.triton.runtime"
INTERPRETER_PRECISIONS = ("fp32", "fp16")
INTERPRETER_LACKS = {"bf16": "Triton's interpreter has no bf16 arithmetic (numpy has no bfloat16)",
                     "tf32": "Triton's interpreter multiplies in full fp32, so TF32 would not "
                             "be what ran"}


def _interpret_requested() -> bool:
    # the values Triton's own getenv_bool takes as true
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on")


def _interpreting() -> bool:
    """Whether the kernels run (or, once imported, will run) under the interpreter."""
    runtime = sys.modules.get(KERNEL_MODULE)
    return runtime.INTERPRET if runtime is not None else _interpret_requested()


def _nvidia_driver_loaded() -> bool:
    """False only where there is certainly no NVIDIA GPU: Linux without the NVIDIA kernel
    driver. Elsewhere torch decides."""
    if not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def _interpreter_works() -> tuple[bool, str]:
    """Triton 3.6's interpreter calls int() on one-element arrays, an error since numpy 2.4
    (checked: 3.6 fails there, 3.9 runs; 3.7 and 3.8 not tried)."""
    from importlib.metadata import version

    def release(package: str) -> tuple[int, ...]:
        return tuple(int(p) for p in version(package).split(".")[:2] if p.isdigit())

    if release("triton") <= (3, 6) and release("numpy") >= (2, 4):
        return False, (f"Triton {version('triton')}'s interpreter fails with numpy "
                       f"{version('numpy')} (it needs numpy < 2.4); install triton>=3.9 or "
                       "numpy<2.4 to run the kernels on the CPU")
    return True, ""


class TritonBackend(Backend):
    name = "triton"
    precisions = ("fp32", "tf32", "bf16", "fp16")
    option_specs = (
        cuda_device_option("the CUDA device: its index, 'cuda:<index>', or 'cuda' (device 0); "
                           "under TRITON_INTERPRET=1 the kernels run on the CPU whatever it says"),
        flag_option("cuda_graph", True, "capture each batch size's forward once as a CUDA "
                                        "graph and replay it (GPU only; False: launch kernel "
                                        "by kernel)"),
    )

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        for package, hint in (("torch", "pip install torch (CPU: torch==2.13.0)"),
                              ("triton", "pip install 'polyvit[triton]'")):
            if importlib.util.find_spec(package) is None:
                return False, f"{package} is not installed: {hint}"
        runtime = sys.modules.get(KERNEL_MODULE)
        if runtime is not None and runtime.INTERPRET != _interpret_requested():
            return False, ("TRITON_INTERPRET changed after polyvit's Triton kernels were "
                           "imported; set it before the first use of the backend")
        if _interpreting():
            return _interpreter_works()
        no_gpu = (False, "no CUDA GPU for Triton's compiled kernels; set TRITON_INTERPRET=1 "
                         "to run them on the CPU through Triton's interpreter (slow: tests)")
        if not _nvidia_driver_loaded():
            return no_gpu  # said without importing torch: available_backends() stays light
        import torch

        if not torch.cuda.is_available():
            return no_gpu
        major, minor = torch.cuda.get_device_capability(0)
        if major < 8:
            return False, (f"CUDA device 0 has compute capability {major}.{minor}; the kernels "
                           "need 8.0 or newer")
        return True, ""

    @classmethod
    def timeable(cls) -> tuple[bool, str]:
        if _interpreting():
            return False, ("its kernels run through Triton's interpreter here (TRITON_INTERPRET=1), "
                           "which would time numpy; vit-bench times it on a GPU")
        return True, ""

    @classmethod
    def supports(cls, precision: str, device: str = "cuda:0", **options: Any) -> tuple[bool, str]:
        if _interpreting():
            if precision not in INTERPRETER_PRECISIONS:
                return False, (f"triton {precision} needs a GPU: {INTERPRETER_LACKS[precision]}")
            return True, ""
        import torch

        why = missing_cuda_device("triton", device, torch.cuda.device_count())
        return (False, why) if why else (True, "")

    @classmethod
    def make_ops(cls, precision: str, device: str, cuda_graph: bool) -> "TritonOps":
        return TritonOps(precision, _torch_device(device))

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        super().__init__(config, weights, precision, **options)
        from .forward import TritonForward

        self.device = _torch_device(self.options["device"])
        try:
            self._forward = TritonForward(config, weights, precision, self.device,
                                          self.options["cuda_graph"])
        except RuntimeError as exc:  # out of device memory, a driver error
            raise BackendError(f"backend 'triton' cannot load the model: {exc}") from exc

    def forward(self, images: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), _on(self.device):
            x = torch.from_numpy(images).to(self.device)
            return self._forward.logits(x).cpu().numpy()

    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes whose buffers (and CUDA graph) are kept, least recently used first."""
        return self._forward.plans.sizes()

    def clear_cache(self) -> None:
        """Frees every batch size's buffers and graph; the weights stay on the device."""
        self._forward.plans.clear()

    def run(self, images: Any):
        """Logits of a torch tensor (B, C, H, W) float32 on this backend's device, returned as
        a tensor on it (no host copies: the benchmarks time this)."""
        import torch

        if not isinstance(images, torch.Tensor) or images.device != self.device:
            raise TypeError(f"run() takes a torch tensor on {self.device}; forward() takes "
                            "numpy arrays")
        cfg = self.config
        expected = (cfg.in_chans, cfg.image_size, cfg.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected or images.shape[0] == 0:
            raise ValueError(f"images has shape {tuple(images.shape)}, expected (B, "
                             f"{', '.join(map(str, expected))}) with B >= 1")
        if images.dtype != torch.float32:
            raise TypeError(f"images has dtype {images.dtype}, expected torch.float32")
        with torch.inference_mode(), _on(self.device):
            return self._forward.logits(images.contiguous())


def _torch_device(device: str):
    import torch

    if _interpreting():
        return torch.device("cpu")
    return torch.device("cuda", cuda_device_index(device))


def _on(device):
    """The context that makes `device` current for the launches (Triton launches on torch's
    current CUDA device)."""
    import contextlib

    import torch

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class TritonOps(Ops):
    """The single ops on one device, float32 numpy in and out. In bf16/fp16 the inputs of
    linear, attention and patch_embed are rounded to that type, and layernorm and attention
    store that type, as the forward runs them; linear and patch_embed return their fp32
    epilogue; bias_gelu is the fp32 kernel in every precision."""

    def __init__(self, precision: str, device) -> None:
        super().__init__(precision)
        from .forward import COMPUTE_DTYPES

        self.device = device
        self.compute = COMPUTE_DTYPES[precision]
        self.tf32 = precision == "tf32"

    def _run(self, kernel, *args, **kwargs) -> np.ndarray:
        import torch

        from .runtime import launches

        with torch.inference_mode(), _on(self.device), launches():
            return kernel(*args, **kwargs).float().cpu().numpy()

    def _tensor(self, a, reduced: bool = False):
        import torch

        if a is None:
            return None
        t = torch.from_numpy(a).to(self.device)
        return t.to(self.compute) if reduced else t

    def _linear(self, x, weight, bias, epilogue, residual):
        from .linear import linear

        return self._run(linear, self._tensor(x, True), self._tensor(weight, True),
                         self._tensor(bias), epilogue, self._tensor(residual), tf32=self.tf32)

    def _layernorm(self, x, weight, bias, eps):
        from .layernorm import layernorm

        return self._run(layernorm, self._tensor(x), self._tensor(weight), self._tensor(bias),
                         eps, self.compute)

    def _attention(self, qkv, num_heads):
        from .attention import attention

        return self._run(attention, self._tensor(qkv, True), num_heads, tf32=self.tf32)

    def _bias_gelu(self, x, bias, form):
        from .bias_gelu import bias_gelu

        return self._run(bias_gelu, self._tensor(x), self._tensor(bias), form)

    def _patch_embed(self, images, weight, bias):
        from .patch_embed import patch_embed

        d, c, p, _ = weight.shape
        return self._run(patch_embed, self._tensor(images),
                         self._tensor(weight.reshape(d, c * p * p), True), self._tensor(bias),
                         p, tf32=self.tf32)

    def attention_class_query(self, qkv, num_heads: int) -> np.ndarray:
        """qkv (B, T, 3D) -> (B, 1, D): the class token's query alone, the last block's path."""
        from .attention import attention

        qkv = self._check("qkv", qkv, (None, None, None))
        return self._run(attention, self._tensor(qkv, True), num_heads, 1, tf32=self.tf32)

    def softmax(self, x) -> np.ndarray:
        """Row softmax (M, C) of the standalone kernel (the per-op charts)."""
        from .softmax import softmax

        return self._run(softmax, self._tensor(self._check("x", x, (None, None))))

    def add(self, x, y) -> np.ndarray:
        """x + y, (M, N), y (M, N) or (N,) broadcast over rows: the standalone kernel."""
        from .add import add

        x = self._check("x", x, (None, None))
        y = self._check("y", y, (None,) * np.ndim(y))
        if y.shape not in (x.shape, x.shape[1:]):
            raise ValueError(f"y has shape {y.shape}; expected {x.shape} or {x.shape[1:]}")
        return self._run(add, self._tensor(x), self._tensor(y))
