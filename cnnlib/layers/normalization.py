"""Normalisation layers: BatchNorm (with state), LayerNorm and GroupNorm (without).

Introduced in chapter 07, notebooks/07-going-deeper.ipynb.

Each subtracts a mean and divides by a standard deviation, then applies a learned per-channel
scale and offset (params ``{"scale": (C,), "offset": (C,)}``, initialised to 1 and 0, so a new
layer is a pure normalisation). They differ in *which values share a mean*:

- `BatchNorm` (Ioffe & Szegedy 2015): one mean per channel over the batch and all positions,
  (N, H, W). It depends on the other examples of the batch, so evaluation uses running
  averages kept in the layer's state instead.
- `LayerNorm`: one mean per example and position, over the channels.
- `GroupNorm` (Wu & He 2018): one mean per example and group of channels, over the group's
  channels and all positions; ``GroupNorm(1)`` normalises each example as a whole.

Statistics are computed in float32 (or the input's dtype if wider) and the output has the
input's dtype, so bfloat16 activations do not lose the mean to rounding.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from cnnlib._validate import check_positive_int
from cnnlib.layers.base import Layer, as_input, check_param_tree, check_single_shape


def BatchNorm(momentum: float = 0.9, epsilon: float = 1e-5) -> Layer:
    """Batch normalisation over (N, H, W) per channel, with running averages for evaluation.

    Training (``train=True``): ``y = (x - mean_B) / sqrt(var_B + epsilon) * scale + offset``
    with the mean and (biased) variance of this batch, per channel; the gradient flows
    through them. The returned state moves towards the batch statistics:
    ``mean <- momentum * mean + (1 - momentum) * mean_B``, and likewise for var with the
    unbiased batch variance ``var_B * m / (m - 1)`` (m values per channel), as the paper
    prescribes for inference. Evaluation (the default): the same formula with the state's
    mean and var, so a prediction does not depend on the rest of its batch.

    State: ``{"mean": (C,), "var": (C,)}``, initialised to 0 and 1.

    With data-parallel training (`fit` over several devices) the batch statistics are those of
    the *whole* batch across devices: the mean is a `jnp.mean` over a batch that jit has
    sharded, and XLA inserts the cross-device sum. The result equals one device's (tested).

    Args:
        momentum: weight of the old running value, in [0, 1] (0.9 = PyTorch's default
            momentum of 0.1, which weights the new value).
        epsilon: added to the variance, > 0.

    Returns:
        A `Layer` with state mapping (N, ..., C) to the same shape. Its apply takes
        ``state=`` and returns ``(y, state)``.

    Example:
        >>> bn = BatchNorm()
        >>> _, params = init_params(bn, jax.random.key(0), (-1, 4, 4, 3))
        >>> state = init_state(bn, (-1, 4, 4, 3))
        >>> x = jax.random.normal(jax.random.key(1), (8, 4, 4, 3)) * 5 + 2
        >>> y, state = bn.apply(params, x, state=state, train=True)
        >>> round(float(y.mean()), 4) + 0.0, round(float(y.std()), 2)
        (0.0, 1.0)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "BatchNorm"
    momentum = _check_unit(momentum, "momentum", where, closed=True)
    epsilon = _check_epsilon(epsilon, where)

    def init(key, in_shape):
        c = _channels(in_shape, where)
        return tuple(in_shape), _scale_offset(c)

    def init_state(in_shape):
        c = _channels(in_shape, where)
        return {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}

    def apply(params, x, *, state=None, key=None, train=False, **kw):
        x = as_input(x, where)
        c = x.shape[-1]
        check_param_tree(params, {"scale": (c,), "offset": (c,)}, where, f"{c} channels")
        if state is None:
            raise ValueError(
                f"{where}: has state (running mean and variance), so apply needs `state` and "
                f"returns (y, state); got no state. Pass state=init_state(model, in_shape)."
            )
        check_param_tree(state, {"mean": (c,), "var": (c,)}, where, f"{c} channels", "state")
        xf = x.astype(_stat_dtype(x))
        axes = tuple(range(x.ndim - 1))  # every axis but the channels: (N, H, W)
        if train:
            m = x.size // c  # values per channel
            if m < 2:
                raise ValueError(
                    f"{where}: training needs at least 2 values per channel to estimate a "
                    f"variance; got x of shape {tuple(x.shape)}. Use a larger batch."
                )
            mean = jnp.mean(xf, axis=axes)  # (C,)
            var = jnp.mean(jnp.square(xf - mean), axis=axes)  # (C,), biased
            old = jax.lax.stop_gradient  # running averages are not trained
            state = {
                "mean": momentum * state["mean"] + (1 - momentum) * old(mean),
                "var": momentum * state["var"] + (1 - momentum) * old(var) * m / (m - 1),
            }
        else:
            mean, var = state["mean"], state["var"]
        y = (xf - mean) * jax.lax.rsqrt(var + epsilon) * params["scale"] + params["offset"]
        return y.astype(x.dtype), state

    config = {"momentum": momentum, "epsilon": epsilon}
    return Layer(init, apply, "batch_norm", config, init_state)


def LayerNorm(epsilon: float = 1e-5) -> Layer:
    """Normalise each position of each example over its channels (the last axis).

    ``y = (x - mean_C) / sqrt(var_C + epsilon) * scale + offset``; the same in training and
    evaluation, no state. For (N, features) inputs this is Ba et al.'s (2016) layer
    normalisation; for images it is the per-pixel form of ConvNeXt. To normalise each image as
    a whole, over (H, W, C), use ``GroupNorm(1)``.

    Args:
        epsilon: added to the variance, > 0.

    Example:
        >>> _, params = init_params(LayerNorm(), jax.random.key(0), (-1, 4))
        >>> y = LayerNorm().apply(params, jnp.array([[1.0, 2.0, 3.0, 4.0]]))
        >>> [round(v, 3) for v in y[0].tolist()]
        [-1.342, -0.447, 0.447, 1.342]

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "LayerNorm"
    epsilon = _check_epsilon(epsilon, where)

    def init(key, in_shape):
        return tuple(in_shape), _scale_offset(_channels(in_shape, where))

    def apply(params, x, **kw):
        x = as_input(x, where)
        c = x.shape[-1]
        check_param_tree(params, {"scale": (c,), "offset": (c,)}, where, f"{c} channels")
        return _normalise(x, (x.ndim - 1,), params, epsilon)

    return Layer(init, apply, "layer_norm", {"epsilon": epsilon})


def GroupNorm(groups: int = 32, epsilon: float = 1e-5) -> Layer:
    """Normalise each example over groups of channels and all positions (Wu & He 2018).

    The C channels are split into `groups` consecutive groups of C / groups; each example's
    mean and variance are taken per group over (H, W, C / groups). It does not depend on the
    batch, so it behaves the same in training and evaluation and with any batch size; no
    state. ``GroupNorm(1)`` normalises each example over (H, W, C); ``GroupNorm(C)`` each
    channel separately (instance normalisation).

    Args:
        groups: number of groups, >= 1; must divide the channels.
        epsilon: added to the variance, > 0.

    Example:
        >>> init_params(GroupNorm(2), jax.random.key(0), (-1, 8, 8, 4))[1]["scale"].shape
        (4,)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "GroupNorm"
    groups = check_positive_int(groups, "groups", where)
    epsilon = _check_epsilon(epsilon, where)

    def init(key, in_shape):
        c = _channels(in_shape, where)
        if c % groups:
            raise ValueError(
                f"{where}: `groups`={groups} must divide the input's channels {c} (in_shape "
                f"{tuple(in_shape)}). Use a divisor of {c}, e.g. groups=1."
            )
        return tuple(in_shape), _scale_offset(c)

    def apply(params, x, **kw):
        x = as_input(x, where)
        c = x.shape[-1]
        check_param_tree(params, {"scale": (c,), "offset": (c,)}, where, f"{c} channels")
        if c % groups:
            raise ValueError(f"{where}: `groups`={groups} must divide the channels of x {c}.")
        grouped = x.reshape(*x.shape[:-1], groups, c // groups)  # (N, ..., G, C / G)
        axes = (*range(1, x.ndim - 1), x.ndim)  # positions and the channels of a group
        y = _normalise(grouped, axes, None, epsilon).reshape(x.shape)
        return (y * params["scale"] + params["offset"]).astype(x.dtype)

    return Layer(init, apply, "group_norm", {"groups": groups, "epsilon": epsilon})


# --- Helpers ----------------------------------------------------------------------------------


def _normalise(x, axes, params, epsilon):
    """(x - mean) / sqrt(var + epsilon) over `axes`, then scale and offset if given."""
    xf = x.astype(_stat_dtype(x))
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + epsilon)
    if params is not None:
        y = y * params["scale"] + params["offset"]
    return y.astype(x.dtype)


def _stat_dtype(x):
    return jnp.promote_types(x.dtype, jnp.float32)


def _scale_offset(c):
    return {"scale": jnp.ones((c,), jnp.float32), "offset": jnp.zeros((c,), jnp.float32)}


def _channels(in_shape, where):
    in_shape = check_single_shape(in_shape, where)
    if len(in_shape) < 2:
        raise ValueError(
            f"{where}: input must have a batch axis and channels, (N, ..., C); got in_shape "
            f"{in_shape}."
        )
    return in_shape[-1]


def _check_unit(value, name, where, closed):
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not (0 <= value <= 1 if closed else 0 <= value < 1):
        raise ValueError(
            f"{where}: `{name}` must be a number in [0, 1]; got {value!r}. Use e.g. 0.9 (the "
            f"weight of the old running average)."
        )
    return float(value)


def _check_epsilon(epsilon, where):
    real = isinstance(epsilon, numbers.Real) and not isinstance(epsilon, bool)
    if not real or not epsilon > 0:
        raise ValueError(f"{where}: `epsilon` must be a number > 0; got {epsilon!r}. Use 1e-5.")
    return float(epsilon)
