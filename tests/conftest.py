"""Shared fixtures: every backend-parametrised test runs each registered backend, skipping an
unavailable one with its reason, unless POLYVIT_REQUIRE_BACKENDS names it (CI sets it for the
backends this machine must run, so a missing one fails instead of skipping)."""

from __future__ import annotations

import os

import pytest

from polyvit import backends

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}


def _backend_or_skip(name: str) -> str:
    ok, reason = backends.available_backends()[name]
    if not ok:
        if name in REQUIRED:
            pytest.fail(f"backend {name} is required here (POLYVIT_REQUIRE_BACKENDS) but is "
                        f"unavailable: {reason}")
        pytest.skip(f"backend {name} unavailable: {reason}")
    return name


@pytest.fixture(params=backends.names())
def backend_name(request) -> str:
    """Each registered backend that can run here."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=[n for n in backends.names() if n != "torch"] or ["torch"])
def native_backend_name(request) -> str:
    """Each registered backend other than the reference (the reference alone when none)."""
    return _backend_or_skip(request.param)

