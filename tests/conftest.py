"""Shared test setup: hypothesis profiles, and float64 switched on per test without leaking."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, settings

# "ci": >= 500 examples per property (CI sets HYPOTHESIS_PROFILE=ci); "dev": a quick local run.
# deadline=None: the first example of each new shape pays for an XLA compile.
for _name, _examples in (("ci", 500), ("dev", 50)):
    settings.register_profile(
        _name,
        max_examples=_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def enable_x64():
    """A context manager that allows float64 inside its block only, on jax 0.4.30 and newer."""
    if hasattr(jax, "enable_x64"):  # jax >= 0.6
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as experimental_enable_x64  # jax 0.4.30 to 0.5

    return experimental_enable_x64()


@pytest.fixture
def x64():
    """float64 for the duration of one test; the global setting is untouched afterwards."""
    with enable_x64():
        yield


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """Each test twice: in float32, and in float64 (x64 on for that test only)."""
    if request.param == "float64":
        with enable_x64():
            yield jnp.float64
    else:
        yield jnp.float32
