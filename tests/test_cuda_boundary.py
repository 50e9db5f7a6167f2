"""The CUDA backend where no GPU is needed: the build, the availability report, and the checks
at the native boundary, which run before the device is touched. On a machine without a GPU this
is what CI proves; tests/test_cuda_gpu.py covers the rest on a GPU (docs/gpu.md)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import polyvit
from polyvit import BackendError
from polyvit.backends import cuda_backend
from polyvit.backends._native import BATCH_SIZES_KEPT, config_fields
from polyvit.backends.cuda_backend import CudaBackend
from polyvit.config import get_config
from polyvit.weights import random_weights

ROOT = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                if Path("/usr/local/cuda/bin/nvcc").exists() else None)
BUILD_OFF = os.environ.get("POLYVIT_CUDA", "AUTO").upper() == "OFF"
CFG = get_config("vit_test")


@pytest.fixture(scope="module")
def cuda():
    """polyvit._cuda; it must have been built wherever nvcc is (the default install builds it)."""
    try:
        from polyvit import _cuda
    except ImportError as exc:
        if NVCC and not BUILD_OFF:
            pytest.fail(f"nvcc is at {NVCC} but polyvit._cuda was not built: {exc}")
        pytest.skip(f"polyvit._cuda not built here (no nvcc or POLYVIT_CUDA=OFF): {exc}")
    return _cuda


@pytest.fixture(scope="module")
def no_device(cuda):
    """The driver's reason, on machines without a CUDA device; skips where there is one."""
    info = cuda.probe()
    if info["count"] > 0:
        pytest.skip("a CUDA device is present: the no-device paths do not apply")
    return info["error"]


def f32(*shape):
    return np.zeros(shape, np.float32)


# ---- build and availability ----------------------------------------------------------------------


def test_the_extension_reports_how_it_was_built(cuda):
    assert set(cuda.architectures.split(",")) >= {"80-real", "90"}
    assert cuda.compiled_runtime_version >= 12000


def test_probe_never_raises_and_explains_itself(cuda):
    info = cuda.probe()
    assert set(info) == {"count", "error", "runtime_version", "driver_version", "devices"}
    assert info["count"] == len(info["devices"])
    assert (info["error"] == "") == (info["count"] > 0)


def test_availability_says_no_cuda_device_with_the_drivers_reason(cuda, no_device):
    ok, reason = CudaBackend.availability()
    assert not ok
    assert reason.startswith("no CUDA device: ")
    assert no_device in reason  # the CUDA error name and text, e.g. cudaErrorInsufficientDriver
    assert "cudaError" in reason
    assert polyvit.available_backends()["cuda"] == (ok, reason)


def test_load_raises_backend_error_with_the_reason(no_device):
    with pytest.raises(BackendError, match="no CUDA device") as info:
        polyvit.load(backend="cuda", config="vit_test")
    assert no_device in str(info.value)


def test_constructing_without_a_device_is_a_backend_error(no_device):
    with pytest.raises(BackendError, match="no CUDA device"):
        CudaBackend(CFG, random_weights(CFG), "fp32")


def test_a_missing_extension_is_reported_not_raised(monkeypatch):
    def missing():
        raise ImportError("No module named 'polyvit._cuda'")

    monkeypatch.setattr(cuda_backend, "_module", missing)
    ok, reason = CudaBackend.availability()
    assert not ok and "not built" in reason and "nvcc" in reason


# ---- the device option ----------------------------------------------------------------------------


@pytest.mark.parametrize("device,index", [("0", 0), ("3", 3), ("cuda", 0), ("cuda:0", 0),
                                          ("cuda:12", 12)])
def test_a_device_string_names_a_device_index(device, index):
    assert cuda_backend.device_index(device) == index


def test_without_a_device_the_ops_are_refused_with_the_reason(no_device):
    with pytest.raises(BackendError, match="no CUDA device"):
        CudaBackend.ops(precision="bf16")


# ---- the ops' native boundary --------------------------------------------------------------------


@pytest.mark.parametrize("call,error,match", [
    (lambda c: c.linear(np.zeros((2, 3)), f32(4, 3), None), TypeError, "dtype float64"),
    (lambda c: c.linear(f32(3, 2).T, f32(4, 3), None), ValueError, "C-contiguous"),
    (lambda c: c.linear([[1.0]], f32(1, 1), None), TypeError, "numpy array"),
    (lambda c: c.linear(f32(2, 3), f32(4, 5), None), ValueError, "weight has shape"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), f32(5)), ValueError, "bias has shape"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), None, "relu"), ValueError, "unknown epilogue"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), None, "residual"), ValueError, "needs residual"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), None, "residual", f32(2, 5)), ValueError,
     "residual has shape"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), None, "none", f32(2, 4)), ValueError,
     "only read by epilogue"),
    (lambda c: c.linear(f32(0, 3), f32(4, 3), None), ValueError, "M must be"),
    (lambda c: c.linear(f32(2, 3), f32(4, 3), None, precision="tf32"), ValueError, "precision"),
    (lambda c: c.layernorm(f32(2, 3), f32(4), f32(3), 1e-6), ValueError, "weight has shape"),
    (lambda c: c.layernorm(f32(2, 3), f32(3), f32(3), 0.0), ValueError, "eps must be positive"),
    (lambda c: c.layernorm(f32(3), f32(3), f32(3), 1e-6), ValueError, r"\(M, C\)"),
    (lambda c: c.attention(f32(1, 5, 48), 5), ValueError, "not divisible"),
    (lambda c: c.attention(f32(1, 5, 47), 1), ValueError, r"\(B, T, 3D\)"),
    (lambda c: c.attention(f32(70000, 1, 3), 1), ValueError, "at most 65535"),
    (lambda c: c.bias_gelu(f32(2, 3), f32(3), "relu"), ValueError, "erf' or 'tanh"),
    (lambda c: c.bias_gelu(f32(2, 3), f32(4)), ValueError, "bias has shape"),
    (lambda c: c.attention(f32(1, 5, 48), 1, "fp32", 5), ValueError, "queries must be None"),
    (lambda c: c.patch_embed(f32(1, 3, 8, 8), f32(4, 3, 3, 3), None), ValueError, "do not tile"),
    (lambda c: c.patch_embed(f32(1, 3, 8, 8), f32(4, 2, 4, 4), None), ValueError, "weight has shape"),
    (lambda c: c.patch_embed(f32(1, 3, 8, 8), f32(4, 3, 4, 2), None), ValueError, "weight has shape"),
    (lambda c: c.patch_embed(f32(3, 8, 8), f32(4, 3, 4, 4), None), ValueError, r"\(B, C, H, W\)"),
    (lambda c: c.patch_embed(f32(1, 3, 8, 8), f32(4, 3, 4, 4), f32(3)), ValueError, "bias has shape"),
    (lambda c: c.patch_embed(f32(1, 3, 8, 8), f32(4, 3, 4, 4), None, "int8"), ValueError, "precision"),
    (lambda c: c.benchmark_op("softmax", [1, 2]), Exception, "unknown op"),
])
def test_ops_check_arguments_before_the_device(cuda, call, error, match):
    with pytest.raises(error, match=match):
        call(cuda)


def test_valid_ops_without_a_device_raise_cuda_error(cuda, no_device):
    with pytest.raises(cuda.CudaError, match="no CUDA device") as info:
        cuda.linear(f32(2, 3), f32(4, 3), f32(4), "gelu_erf")
    assert no_device in str(info.value)
    assert issubclass(cuda.CudaError, RuntimeError)


# ---- the model's native boundary -----------------------------------------------------------------


def model(cuda, config, weights, precision="fp32"):
    """polyvit._cuda.Model as CudaBackend builds it, on device 0 with graphs."""
    return cuda.Model(config, weights, precision, 0, True, BATCH_SIZES_KEPT)


@pytest.mark.parametrize("change,error,match", [
    (lambda c, w: w.pop("head.bias"), ValueError, r"missing tensor head.bias of shape \(10,\)"),
    (lambda c, w: w.pop("blocks.1.attn.qkv.bias"), ValueError, "missing tensor blocks.1.attn.qkv.bias"),
    (lambda c, w: w.update({"extra": f32(1)}), ValueError, r"unexpected tensor extra \(1,\)"),
    (lambda c, w: w.update({"blocks.2.norm1.weight": f32(48)}), ValueError,
     "unexpected tensor blocks.2.norm1.weight"),  # vit_test has 2 blocks
    (lambda c, w: c.update({"qkv_bias": False}), ValueError, "unexpected tensor blocks.0.attn.qkv.bias"),
    (lambda c, w: w.update({"norm.bias": f32(47)}), ValueError,
     r"norm.bias has shape \(47,\), expected \(48,\)"),
    (lambda c, w: w.update({"blocks.0.attn.qkv.weight": f32(144, 47)}), ValueError,
     r"blocks.0.attn.qkv.weight has shape \(144, 47\), expected \(144, 48\)"),
    (lambda c, w: w.update({"norm.bias": np.zeros(48)}), TypeError, "dtype float64"),
    (lambda c, w: w.update({"pos_embed": np.zeros((1, 48, 17), np.float32).transpose(0, 2, 1)}),
     ValueError, "C-contiguous"),
    (lambda c, w: c.update({"gelu": "relu"}), ValueError, "gelu"),
    (lambda c, w: c.pop("ln_eps"), ValueError, "no field 'ln_eps'"),
    (lambda c, w: c.update({"depth": "two"}), TypeError, "depth"),
    (lambda c, w: c.update({"num_heads": 5}), ValueError, "divisible"),
    (lambda c, w: c.update({"patch_size": 7}), ValueError, "multiple"),
])
def test_model_checks_config_and_weights_before_the_device(cuda, change, error, match):
    cfg, weights = config_fields(CFG), dict(random_weights(CFG))
    change(cfg, weights)
    with pytest.raises(error, match=match):
        model(cuda, cfg, weights)


def test_model_rejects_an_unknown_precision(cuda):
    with pytest.raises(ValueError, match="precision"):
        model(cuda, config_fields(CFG), random_weights(CFG), "int8")


def test_valid_model_without_a_device_raises_cuda_error(cuda, no_device):
    with pytest.raises(cuda.CudaError, match="no CUDA device"):
        model(cuda, config_fields(CFG), random_weights(CFG), "bf16")


# ---- device arrays: the host-side reading of __cuda_array_interface__ ----------------------------


class FakeCudaArray:
    """An object exposing only the CUDA array interface: the boundary reads it without a device."""

    def __init__(self, **fields):
        self.__cuda_array_interface__ = {"shape": (2, 3, 32, 32), "typestr": "<f4",
                                         "data": (0x7000_0000, False), "version": 3, **fields}


def test_a_cuda_array_interface_is_read_without_copies(cuda):
    info = cuda.inspect_device_array(FakeCudaArray(stream=None))
    assert info == {"data": 0x7000_0000, "shape": (2, 3, 32, 32), "stream": None}
    assert cuda.inspect_device_array(FakeCudaArray(strides=(12288, 4096, 128, 4)))["shape"] == (2, 3, 32, 32)
    assert cuda.inspect_device_array(FakeCudaArray(stream=5))["stream"] == 5


@pytest.mark.parametrize("fields,error,match", [
    ({"typestr": "<f8"}, TypeError, "float32"),
    ({"strides": (4, 8, 256, 8192)}, ValueError, "C-contiguous"),
    ({"mask": object()}, ValueError, "masked"),
    ({"stream": 0}, ValueError, "forbids"),
    ({"data": (0, False)}, ValueError, "null device pointer"),
])
def test_bad_cuda_array_interfaces_are_rejected(cuda, fields, error, match):
    with pytest.raises(error, match=match):
        cuda.inspect_device_array(FakeCudaArray(**fields))


def test_an_interface_that_names_no_stream_is_ordered_after_the_legacy_default_stream(cuda):
    """Version 2 (torch's) has no 'stream': run() waits for the legacy default stream (handle 1),
    where torch's default stream runs, instead of reading at once on its non-blocking stream.
    Version 3's stream None still says the data is ready."""
    assert cuda.inspect_device_array(FakeCudaArray(version=2))["stream"] == 1
    assert cuda.inspect_device_array(FakeCudaArray(stream=None))["stream"] is None


class DLTensor(ctypes.Structure):  # dlpack.h's DLManagedTensor, unversioned
    _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64),
                ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class FakeDLPackArray:
    """A CUDA float32 (2, 3, 32, 32) array at 0x7000_0000 behind both protocols, as torch and
    CuPy have them; it records the stream each __dlpack__ call asks it to order its work before.
    keyword=False: an exporter whose __dlpack__ takes no stream."""

    def __init__(self, keyword: bool = True, device=(2, 0)):
        self.streams, self._keyword, self._device = [], keyword, device
        self.__cuda_array_interface__ = FakeCudaArray().__cuda_array_interface__
        self._shape = (ctypes.c_int64 * 4)(2, 3, 32, 32)

    def __dlpack__(self, *args, **kwargs):
        if not self._keyword and kwargs:
            raise TypeError("__dlpack__() got an unexpected keyword argument 'stream'")
        self.streams.append(kwargs.get("stream"))
        self._tensor = DLTensor(0x7000_0000, 2, 0, 4, 2, 32, 1, self._shape, None, 0, None, None)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self._tensor), b"dltensor", None)

    def __dlpack_device__(self):
        return self._device


def test_dlpack_comes_first_and_orders_the_producer_before_our_stream(cuda):
    """With both protocols, __dlpack__(stream=<the backend's stream>) is what run() reads: the
    producer (torch: an event on its current stream) makes that stream wait for its writes, so
    nothing more is waited for. torch's __cuda_array_interface__ names no stream at all."""
    array = FakeDLPackArray()
    info = cuda.inspect_device_array(array, stream=0x1234)
    assert info == {"data": 0x7000_0000, "shape": (2, 3, 32, 32), "stream": None}
    assert array.streams == [0x1234]


def test_a_dlpack_exporter_without_the_stream_keyword_is_waited_for_on_the_legacy_stream(cuda):
    array = FakeDLPackArray(keyword=False)
    assert cuda.inspect_device_array(array)["stream"] == 1  # DLPack's default: the legacy stream
    assert array.streams == [None]


def test_a_dlpack_export_refused_with_buffer_error_falls_back_to_the_interface(cuda):
    """torch raises BufferError when it believes another device is current (it may defer its
    cudaSetDevice): the interface, waited for on the legacy default stream, still reads it."""

    class Refusing(FakeDLPackArray):
        def __dlpack__(self, **kwargs):
            raise BufferError("Can't export tensors on a different CUDA device index")

    assert cuda.inspect_device_array(Refusing()) == {"data": 0x7000_0000, "shape": (2, 3, 32, 32),
                                                     "stream": 1}


def test_a_dlpack_array_in_host_memory_is_refused_before_it_is_exported(cuda):
    array = FakeDLPackArray(device=(1, 0))
    with pytest.raises(ValueError, match="not in CUDA device memory"):
        cuda.inspect_device_array(array)
    assert array.streams == []


def test_an_object_without_cuda_arrays_is_a_type_error(cuda):
    with pytest.raises(TypeError):
        cuda.inspect_device_array(object())


# ---- the benchmarks and the dev programs ---------------------------------------------------------


@pytest.mark.parametrize("script", ["cuda_vs_torch.py", "cuda_kernels.py"])
def test_the_benchmarks_import_and_explain_a_missing_gpu(script, no_device, capsys):
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location(script[:-3], ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--batches", "1"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ---- the dev programs compile ----------------------------------------------------------------------


@pytest.mark.skipif(NVCC is None or shutil.which("make") is None, reason="needs nvcc and make")
def test_the_dev_programs_compile(tmp_path):
    """cuda/dev/*.cu with the kernels they promote, for sm_90 only (about 15 s on 2 cores): the
    package build compiles every kernel for sm_80 too."""
    env = dict(os.environ, PATH=f"{Path(NVCC).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["make", "-C", str(ROOT / "cuda" / "dev"), "-j2", "ARCHS=90",
                             f"BUILD={tmp_path}"],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for program in ("attention", "bias_gelu", "layernorm", "linear_fp32", "linear_tc", "patch_embed"):
        assert (tmp_path / program).is_file(), program
