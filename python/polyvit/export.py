"""Export a checkpoint for deployment elsewhere: ONNX, TorchScript or a torch.export program.

Every export is of the reference itself (ReferenceModule: polyvit.reference.forward with the
weights as buffers), made in float32, and checked before it is written: the exported model's
logits must pass the fp32 parity rule against the float64 reference (the same rule every
backend is held to) at two batch sizes (one, with a fixed batch), and an ONNX file must pass
onnx.checker. A failed check writes nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import parity
from .config import ViTConfig
from .errors import PolyvitError

FORMATS = ("onnx", "torchscript", "exported-program")
CHECK_BATCHES = (1, 3)


class ExportError(PolyvitError, RuntimeError):
    """The exporter refused the model or its options, or the export failed its check."""


@dataclass
class ExportReport:
    path: str
    format: str
    batches: tuple[int, ...]      # batch sizes the check ran
    max_abs_error: float          # worst |exported - float64 reference| over those batches
    tolerance: float              # the fp32 parity bound at the worst batch
    opset: int | None = None


def reference_module(cfg: ViTConfig, weights: dict[str, np.ndarray]):
    """polyvit.reference.forward as an nn.Module holding the weights (float32 buffers)."""
    import torch

    from . import reference

    class ReferenceModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.names = sorted(weights)
            for i, name in enumerate(self.names):
                self.register_buffer(f"w{i}", torch.from_numpy(np.array(weights[name], np.float32)))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            w = {name: getattr(self, f"w{i}") for i, name in enumerate(self.names)}
            return reference.forward(self.cfg, w, images)

    return ReferenceModule().eval().requires_grad_(False)


def export(weights: Any, out: str, format: str = "onnx", *, opset: int | None = None,
           dynamic_batch: bool = False, config: str | None = None,
           num_heads: int | None = None, image_size: int | None = None) -> ExportReport:
    """Export `weights` (any supported layout, or None for the built-in seeded ones) to `out`,
    check it against the float64 reference, and only then write it."""
    from .inference.output import check_writable
    from .model import resolve_weights

    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if opset is not None and format != "onnx":
        raise ExportError("--opset applies to ONNX exports only")
    check_writable(out)
    cfg, tensors, _ = resolve_weights(weights, config, num_heads, image_size)
    module = reference_module(cfg, tensors)
    if dynamic_batch and format == "torchscript":
        raise ExportError("TorchScript tracing fixes the batch size; for a dynamic batch export "
                          "onnx or exported-program")
    batches = CHECK_BATCHES if dynamic_batch else CHECK_BATCHES[:1]
    folder = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".polyvit-export-") as tmp:
        staged = os.path.join(tmp, os.path.basename(out))
        run = _EXPORTERS[format](module, cfg, staged, opset, dynamic_batch)
        worst = (0.0, 0.0)
        for batch in batches:
            images = parity.random_images(cfg, batch, seed=batch)
            oracle, tol = parity.reference_outputs(cfg, tensors, images)
            got = run(images)
            result = parity.compare(got, oracle, tol)
            if not result.passed:
                raise ExportError(f"the {format} export failed its check at batch {batch}: "
                                  f"{result.describe()}; nothing was written")
            worst = max(worst, (result.max_abs_error, tol))
        os.replace(staged, out)
    return ExportReport(out, format, batches, worst[0], worst[1], getattr(run, "opset", None))


def _example(cfg: ViTConfig, batch: int = 1):
    """An input to trace with; batch 2 for a dynamic batch (torch specialises a traced 1)."""
    import torch

    return torch.from_numpy(parity.random_images(cfg, batch, seed=0))


def _onnx(module, cfg: ViTConfig, path: str, opset: int | None, dynamic_batch: bool):
    import torch

    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is "
                          "missing): pip install onnxruntime onnxscript (part of polyvit[bench])") from None
    kwargs: dict[str, Any] = {"dynamo": True, "verbose": False, "external_data": False,
                              "input_names": ["images"], "output_names": ["logits"]}
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"images": {0: torch.export.Dim("batch", min=1, max=4096)}}
    # the exporter and onnxscript's version converter log every fallback they try (with
    # tracebacks); what matters is reported below as one error
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (_example(cfg, 2 if dynamic_batch else 1),), path, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the exporter's many failure types, one message
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if opset is not None:
            raise ExportError(f"the installed exporter (torch {torch.__version__}) cannot export "
                              f"opset {opset}: {text}; leave --opset out for its default") from None
        raise ExportError(f"torch.onnx could not export the model: {text}") from None
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {exc}") from None
    found = {o.domain or "ai.onnx": o.version for o in model.opset_import}.get("ai.onnx")
    if opset is not None and found != opset:
        raise ExportError(f"the installed exporter (torch {torch.__version__}) cannot export "
                          f"opset {opset}: it wrote opset {found}; leave --opset out for its "
                          "default")
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images})[0]

    run.opset = found  # type: ignore[attr-defined]
    return run


def _torchscript(module, cfg: ViTConfig, path: str, opset: int | None, dynamic_batch: bool):
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(module, (_example(cfg),), check_trace=False)
    torch.jit.save(traced, path)
    loaded = torch.jit.load(path)
    return lambda images: loaded(torch.from_numpy(images)).numpy()


def _exported_program(module, cfg: ViTConfig, path: str, opset: int | None,
                      dynamic_batch: bool):
    import torch

    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
    program = torch.export.export(module, (_example(cfg, 2 if dynamic_batch else 1),),
                                  dynamic_shapes=dynamic)
    torch.export.save(program, path)
    loaded = torch.export.load(path).module()
    return lambda images: loaded(torch.from_numpy(images)).numpy()


_EXPORTERS = {"onnx": _onnx, "torchscript": _torchscript, "exported-program": _exported_program}
