"""The peers polyvit is measured against, on the same weights, and their runners: torch eager
and torch.compile (the idiomatic torch ViT of torch_peer.py, on the CPU or a GPU), ONNX Runtime
and OpenVINO (both on one ONNX export of that model). Each is optional: a missing package
makes its runner unavailable with the reason, never an error."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..config import ViTConfig
from .sweep import Runner

Fn = Callable[[Any], Any]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gpu_missing() -> str | None:
    """Why polyvit cannot be measured against torch on a GPU here, or None when it can: that
    needs the cuda backend and a CUDA build of torch, both seeing a device."""
    import torch

    from ..backends import backend_class

    ok, reason = backend_class("cuda").availability()
    if ok and torch.cuda.is_available():
        return None
    return ("needs a GPU with the cuda backend and a CUDA build of torch: "
            f"{reason or 'torch.cuda.is_available() is False'}")


# ---- builders: each returns a callable images -> logits -----------------------------------------

def torch_eager(model, precision: str, threads: int | None = None) -> Fn:
    """model on its device; fp32 as is, bf16/fp16 under autocast. On the CPU it takes and returns
    numpy; on a GPU it takes a device tensor and returns the device tensor once the GPU is done,
    so its time is the forward's, not a transfer's."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    device = next(model.parameters()).device
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def run(x):
        with torch.inference_mode(), torch.autocast(device.type, dtype,
                                                    enabled=precision != "fp32"):
            y = model(torch.as_tensor(x, device=device))
        if device.type == "cpu":
            return y.float().numpy()
        torch.cuda.synchronize(device)
        return y
    return run


def torch_compiled(model, precision: str, threads: int | None = None,
                   mode: str | None = None) -> Fn:
    """torch.compile of the model (mode: None, "reduce-overhead", "max-autotune"), one graph per
    input shape; the first call of each shape compiles."""
    import torch
    import torch._inductor.config as inductor

    inductor.freezing = True  # weights become constants, as in deployment
    return torch_eager(torch.compile(model, mode=mode, dynamic=False), precision, threads)


class OnnxExport:
    """One ONNX export of the torch model, made on first use and shared by ONNX Runtime and
    OpenVINO."""

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
                                      dynamic_shapes={"images": {0: batch}}, external_data=False)
            finally:
                quiet.setLevel(level)
        return self._file()

    def _file(self, suffix: str = "") -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, f"vit{suffix}.onnx")

    def static_int8(self, calibration: np.ndarray) -> str:
        """The export quantized by ONNX Runtime's post-training static quantization: QDQ format,
        int8 weights per output channel, uint8 activations with scales calibrated on
        `calibration` (one image per calibration step), made once."""
        source = self.path()  # exported first: an int8-only run has not exported it yet
        quantized = self._file("-int8-qdq")
        if not os.path.exists(quantized):
            from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                                  quantize_static)
            from onnxruntime.quantization.shape_inference import quant_pre_process

            import onnx

            name = onnx.load(source, load_external_data=False).graph.input[0].name

            class Images(CalibrationDataReader):
                def __init__(self) -> None:
                    self._next = iter({name: calibration[i:i + 1]} for i in range(len(calibration)))

                def get_next(self):
                    return next(self._next, None)

            prepared = self._file("-prepared")
            with _quiet():
                quant_pre_process(source, prepared)
                quantize_static(prepared, quantized, Images(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8)
        return quantized


@contextlib.contextmanager
def _quiet():
    """Silences the quantizers' progress bars and logs (they print to stdout/stderr)."""
    import logging
    import warnings

    sink = io.StringIO()
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.root.setLevel(level)


def onnxruntime(export: OnnxExport, precision: str, threads: int | None = None,
                calibration: np.ndarray | None = None) -> Fn:
    """fp32: the export as is; int8: its static QDQ quantization calibrated on `calibration`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    model = export.static_int8(_needs(calibration)) if precision == "int8" else export.path()
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino(export: OnnxExport, precision: str, threads: int | None = None,
             calibration: np.ndarray | None = None) -> Fn:
    """fp32 with INFERENCE_PRECISION_HINT=f32; bf16 with its bf16 hint (OpenVINO's default on
    CPUs with AVX512_BF16); int8: the model quantized by NNCF's post-training quantization
    (ModelType.TRANSFORMER, calibrated on `calibration`), compiled with OpenVINO's defaults, as
    OpenVINO's int8 is deployed."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision == "int8":
        import nncf

        images = _needs(calibration)
        with _quiet():
            model = nncf.quantize(core.read_model(export.path()),
                                  nncf.Dataset([images[i:i + 1] for i in range(len(images))]),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(images))
    else:
        model = export.path()
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
    request = core.compile_model(model, "CPU", config).create_infer_request()
    return lambda x: np.asarray(next(iter(request.infer({0: x}).values())), dtype=np.float32)


def _needs(calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        raise ValueError("an int8 peer needs calibration images (peer_runners(calibration=...))")
    return calibration


@dataclass(frozen=True)
class Peer:
    name: str
    modules: tuple[str, ...]     # the packages it needs
    precisions: tuple[str, ...]
    build: Callable[..., Fn]     # build(model or ONNX export, precision, threads)
    onnx: bool                   # runs the ONNX export rather than the torch model
    costly: bool                 # slow to set up (compiles)


PEERS = (
    Peer("torch eager", ("torch",), ("fp32", "bf16"), torch_eager, False, False),
    Peer("torch.compile", ("torch",), ("fp32", "bf16"), torch_compiled, False, True),
    Peer("onnxruntime", ("onnxruntime", "onnxscript"), ("fp32", "int8"), onnxruntime, True, False),
    Peer("openvino", ("openvino", "onnxscript"), ("fp32", "bf16", "int8"), openvino, True, False),
)
CALIBRATED = ("int8",)  # precisions whose peers quantize with calibration images


def peer_runners(precisions: list[str], cfg: ViTConfig, weights: Mapping[str, np.ndarray],
                 threads: int | None, include_costly: bool = True,
                 names: list[str] | None = None, calibration: np.ndarray | None = None
                 ) -> tuple[list[Runner], list[str]]:
    """(CPU runners of the peers offering these precisions, notes on peers left out); names
    picks peers by name (default: all). The torch model is built once and the ONNX export made
    on the first runner's set-up, both shared by every runner. calibration: the images the int8
    peers calibrate their activation scales on (int8 peers are left out without it)."""
    runners, notes = [], []
    model = export = None
    for peer in PEERS:
        if names is not None and peer.name not in names:
            continue
        missing = [m for m in peer.modules if not installed(m)]
        if missing:
            notes.append(f"{peer.name}: not installed ({', '.join(missing)}); pip install "
                         f"'polyvit[bench]'")
            continue
        if peer.costly and not include_costly:
            notes.append(f"{peer.name}: left out (a cold compile takes ~20 s)")
            continue
        if model is None:
            from . import torch_peer

            model = torch_peer.vit(cfg, weights)
        if peer.onnx and export is None:
            export = OnnxExport(model, cfg)
        source = export if peer.onnx else model
        for precision in precisions:
            if precision not in peer.precisions:
                continue
            if precision in CALIBRATED:
                if calibration is None:
                    notes.append(f"{peer.name} {precision}: left out (no calibration images)")
                    continue
                build = functools.partial(peer.build, source, precision, threads, calibration)
            else:
                build = functools.partial(peer.build, source, precision, threads)
            runners.append(Runner(peer.name, "peer", precision, build))
    return runners, notes
