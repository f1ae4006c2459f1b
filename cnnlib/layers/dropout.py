"""Dropout: the layer that needs a random key and a train/evaluation mode.

Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnlib._validate import check_fraction, check_key
from cnnlib.layers.base import Layer, as_input, check_single_shape


def Dropout(rate: float) -> Layer:
    """Inverted dropout (Srivastava et al. 2014): in training, zero each unit with probability
    `rate` and scale the rest by ``1 / (1 - rate)``; at evaluation, the identity.

    The scaling keeps the expected value of every unit, so the next layer sees activations of
    the same size in both modes and nothing needs rescaling at evaluation. Each unit is
    dropped independently, from the `key` that `serial` hands this layer (a different one at
    every training step in `fit`). The gradient through a dropped unit is zero.

    Unlike ``jax.example_libraries.stax.Dropout``, whose argument is the probability of
    *keeping* a unit, `rate` is the probability of dropping it (as in PyTorch and Flax).

    Args:
        rate: probability of dropping a unit, in [0, 1); 0 is the identity.

    Returns:
        A `Layer` that keeps the shape; no parameters. Its apply needs ``key`` when
        ``train=True``.

    Example:
        >>> layer = Dropout(0.5)
        >>> x = jnp.ones((1, 8))
        >>> y = layer.apply({}, x, key=jax.random.key(0), train=True)
        >>> sorted(set(y.ravel().tolist())) <= [0.0, 2.0], bool(jnp.all(layer.apply({}, x) == x))
        (True, True)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    rate = _check_rate(rate)

    def init(key, in_shape):
        return check_single_shape(in_shape, "Dropout"), {}

    def apply(params, x, *, key=None, train=False, **kw):
        x = as_input(x, "Dropout")
        if not train or rate == 0.0:
            return x  # evaluation: the identity
        keep = jax.random.bernoulli(_training_key(key), 1.0 - rate, x.shape)  # P(keep) = 1 - p
        return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)  # kept units scaled up

    return Layer(init, apply, "dropout", {"rate": rate})


def _check_rate(rate):
    return check_fraction(
        rate, "rate", "Dropout", zero=True, meaning=", the probability of dropping a unit",
        fix="Use e.g. 0.5 for a dense layer, 0.1 for a convolution.",
    )


def _training_key(key):
    if key is None:
        raise ValueError(
            "Dropout: training (train=True) draws which units to drop and needs a `key`; got "
            "key=None. Pass key=... to apply (fit and make_train_step do), or train=False to "
            "evaluate."
        )
    check_key(key, "key", "Dropout")
    return key
