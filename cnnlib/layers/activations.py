"""Elementwise activation layers: same shape out, no parameters.

Introduced in chapter 03, notebooks/03-locality.ipynb; saturating against non-saturating ones
in chapter 07, notebooks/07-going-deeper.ipynb.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cnnlib.layers.base import Layer, as_input, check_single_shape


def _activation(fn: Callable, name: str, doc: str) -> Callable[[], Layer]:
    where = name.capitalize()

    def constructor() -> Layer:
        return Layer(lambda key, in_shape: (check_single_shape(in_shape, where), {}),
                     lambda params, x, **kw: fn(as_input(x, where)), name, {})

    constructor.__name__ = constructor.__qualname__ = where
    constructor.__doc__ = doc
    return constructor


Relu = _activation(jax.nn.relu, "relu", """Elementwise max(x, 0); same shape out, no parameters.

    Example:
        >>> serial(Conv(6, 5), Relu()).name
        'serial'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """)
Tanh = _activation(jnp.tanh, "tanh", """Elementwise tanh; same shape out, no parameters.

    Example:
        >>> Tanh().name
        'tanh'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """)
Sigmoid = _activation(jax.nn.sigmoid, "sigmoid", """Elementwise 1 / (1 + exp(-x)); no parameters.

    Saturates on both sides, and its derivative is at most 1/4: the activation of early
    networks that made deep stacks hard to train (chapter 07).

    Example:
        >>> Sigmoid().name
        'sigmoid'

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """)
Gelu = _activation(
    lambda x: jax.nn.gelu(x, approximate=False), "gelu",
    """Elementwise exact GELU, x * Phi(x) (PyTorch's default); same shape out, no parameters.

    Example:
        >>> Gelu().name
        'gelu'

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """,
)
