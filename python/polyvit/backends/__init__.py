"""The backend registry: names mapped to lazily imported classes.

A backend is listed here once it runs; importing this package imports no backend.
"""

from __future__ import annotations

import importlib

from ..errors import BackendError

# name -> "module:Class", imported on first use
_REGISTRY: dict[str, str] = {
    "torch": "polyvit.backends.torch_backend:TorchBackend",
    "cpp": "polyvit.backends.cpp_backend:CppBackend",
    "mojo": "polyvit.backends.mojo_backend:MojoBackend",
    "cuda": "polyvit.backends.cuda_backend:CudaBackend",
    "sycl": "polyvit.backends.sycl_backend:SyclBackend",
    "triton": "polyvit.backends.triton.backend:TritonBackend",
}


def names() -> list[str]:
    return list(_REGISTRY)


def backend_class(name: str) -> type:
    """The class registered as `name`; BackendError listing the known names if there is none."""
    if name not in _REGISTRY:
        listing = ", ".join(f"{n} ({'available' if ok else 'unavailable'})"
                            for n, (ok, _) in available_backends().items())
        raise BackendError(f"unknown backend {name!r}; backends: {listing}")
    module, _, cls = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def available_backends() -> dict[str, tuple[bool, str]]:
    """{name: (available, reason)} for every registered backend. Never raises."""
    result = {}
    for name in _REGISTRY:
        try:
            result[name] = backend_class(name).availability()
        except Exception as exc:  # a broken install must not break the listing
            result[name] = (False, f"backend failed to load: {type(exc).__name__}: {exc}")
    return result


def require(name: str) -> type:
    """The class of an available backend, or BackendError saying why it cannot run here."""
    cls = backend_class(name)
    ok, reason = cls.availability()
    if not ok:
        others = [n for n, (avail, _) in available_backends().items() if avail]
        raise BackendError(f"backend {name!r} is not available: {reason}. "
                           f"Available here: {', '.join(others) or 'none'}")
    return cls
