"""Layers as pairs of pure functions, composed like `jax.example_libraries.stax`.

Introduced in chapter 03, notebooks/03-locality.ipynb; keys, train mode and state in chapter
07, notebooks/07-going-deeper.ipynb.

The contract
------------
A `Layer` is ``Layer(init, apply, name, config, init_state=None)``:

- ``init(key, in_shape) -> (out_shape, params)`` computes the output shape by arithmetic
  (`conv_output_size`), never by running the layer on data, and draws the parameters: plain
  nested dicts of arrays, ``{}`` for a layer without.
- ``apply(params, x, *, key=None, train=False) -> y`` is the forward pass, a pure function.
  `train` selects training mode (Dropout drops units, BatchNorm uses the batch's statistics);
  the default is evaluation. `key` is a `jax.random` key for layers that draw random numbers
  in training (Dropout). A layer that needs neither takes ``**kw`` and ignores them.
- ``init_state(in_shape) -> state`` exists only for a layer with *state*: values that the
  forward pass updates and gradients never touch, such as BatchNorm's running averages
  (nested dicts of arrays, like params). Such a layer's apply takes the state and returns the
  new one: ``apply(params, x, *, state, key=None, train=False) -> (y, state)``. In evaluation
  the state comes back unchanged. For every other layer ``init_state`` is None.
- ``config`` is a plain dict of the normalised constructor arguments. Layers that move along H
  and W have ``kernel_size``, ``stride``, ``padding`` and ``dilation`` (pairs; padding a string
  or ``((top, bottom), (left, right))``); `serial` has ``{"layers": (children...)}``, `parallel`
  ``{"branches": ...}``, `Residual` ``{"inner": ..., "shortcut": ...}``. Code such as
  `cnnlib.receptive_field` walks a model through ``config`` alone, without data.

Combinators (`serial`, `parallel`, `Residual`) follow the same contract and pass `key`,
`train` and `state` on: child i gets the key ``jax.random.fold_in(key, i)``, so every layer
draws its own random numbers from one key, and a combinator has state when any child has.
Called with ``state=``, a combinator returns ``(y, state)``; without, it returns y, and a
model with state raises a ValueError asking for it. `cnnlib.train.fit` and
`cnnlib.train.evaluate` follow the same rule: pass ``state=`` and get the new state back.

A user-written layer is a `Layer` built from two such functions; it works in every
combinator, in `fit` and in `receptive_field` (given ``kernel_size``/``stride`` in its config,
or a name listed there as elementwise).

Shapes include the batch axis: ``(N, H, W, C)`` for images, ``(N, features)`` after `Flatten`.
N may be -1 ("any"); it is carried through unchanged. After `FanOut` the "shape" is a tuple of
shapes, one per branch.

Parameter keys: `serial` keys its children's params ``f"{index}_{name}"`` ("0_conv",
"10_dense"), leaving out children without parameters, so every key says where in the chain its
weights sit; `named` gives a child a fixed key instead. Layers with weights initialise them from
N(0, gain / fan_in) (`cnnlib.layers.linear`). `init_params` compiles a model's whole init once
per input shape and reuses it, so a sweep over seeds pays for compilation once.
"""

from cnnlib.layers.activations import Gelu, Relu, Sigmoid, Tanh
from cnnlib.layers.base import (
    GAINS,
    Layer,
    cast_params,
    init_params,
    init_state,
    param_shapes,
)
from cnnlib.layers.combinators import (
    FanInConcat,
    FanInSum,
    FanOut,
    Identity,
    Residual,
    named,
    parallel,
    serial,
)
from cnnlib.layers.dropout import Dropout
from cnnlib.layers.linear import Conv, Dense, LocallyConnected
from cnnlib.layers.normalization import BatchNorm, GroupNorm, LayerNorm
from cnnlib.layers.pooling import (
    AvgPool,
    BlurPool,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxBlurPool,
    MaxPool,
)

__all__ = [
    "Layer", "init_params", "param_shapes", "init_state", "cast_params", "GAINS",
    "Conv", "Dense", "LocallyConnected",
    "MaxPool", "AvgPool", "BlurPool", "MaxBlurPool", "GlobalAvgPool", "GlobalMaxPool",
    "Flatten",
    "Relu", "Tanh", "Sigmoid", "Gelu",
    "serial", "named", "Identity", "FanOut", "parallel", "FanInSum", "FanInConcat", "Residual",
    "Dropout", "BatchNorm", "LayerNorm", "GroupNorm",
]
