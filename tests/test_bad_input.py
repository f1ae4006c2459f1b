"""The bad-input table: deliberately wrong calls, each with the error a user must see.

Every row is a call that once failed silently or with a raw message (a NaN carried on, a wrong
number, an XLA traceback, a NumPy hint to unpickle). A new public function joins the table
with its own wrong calls. Each row states the exception type and a pattern of its message,
which names the function, the argument, the value received and the fix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlib import checkpoint, train
from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    FanInSum,
    GlobalAvgPool,
    Relu,
    init_params,
    init_state,
    serial,
)

MODEL = serial(Conv(4, 3), Relu(), GlobalAvgPool(), Dense(10))
SHAPE = (-1, 8, 8, 3)
_, PARAMS = init_params(MODEL, jax.random.key(0), SHAPE)
X = np.random.default_rng(0).random((16, 8, 8, 3), np.float32)
Y = np.arange(16) % 10
BN = serial(Conv(4, 3), BatchNorm(), Relu(), GlobalAvgPool(), Dense(10))
_, BN_PARAMS = init_params(BN, jax.random.key(0), SHAPE)
KW = dict(epochs=1, batch_size=8, key=jax.random.key(0), progress=False)


def fit(data=(X, Y), params=PARAMS, model=MODEL, optimizer=optax.sgd(0.1), **kw):
    return train.fit(model.apply, params, optimizer, data, **{**KW, **kw})


def with_conv_w(w):
    return {**PARAMS, "0_conv": {**PARAMS["0_conv"], "w": w}}


def with_dense_b(b):
    return {**PARAMS, "3_dense": {**PARAMS["3_dense"], "b": b}}


def write(tmp, name, content):
    path = tmp / name
    path.write_bytes(content)
    return path


# (reproducer, call, exception, message pattern); `call` takes a temporary folder.
TABLE = [
    # 1. Labels out of range.
    ("cross_entropy label 12", lambda t: train.cross_entropy(jnp.zeros((2, 10)), jnp.array([3, 12])),
     ValueError, r"cross_entropy: `labels` must lie in 0\.\.9 \(logits have 10 columns\); got "
                 r"values from 3 to 12"),
    ("cross_entropy label -1", lambda t: train.cross_entropy(jnp.zeros((2, 10)), jnp.array([3, -1])),
     ValueError, r"cross_entropy: `labels` must lie in 0\.\.9"),
    ("fit labels >= classes", lambda t: fit((X, Y + 5)),
     ValueError, r"fit: labels in `train_data` must lie in 0\.\.9 \(the model has 10 outputs\); "
                 r"got values from 5 to 14"),
    ("evaluate labels >= classes", lambda t: train.evaluate(MODEL.apply, PARAMS, X, Y + 5),
     ValueError, r"evaluate: labels in `y` must lie in 0\.\.9"),
    # 2. Non-finite data and losses.
    ("fit on NaN images", lambda t: fit((np.full_like(X, np.nan), Y)),
     ValueError, r"fit: x in `train_data` must be finite; 3072 of its 3072 values are NaN"),
    ("fit whose loss overflows", lambda t: fit(optimizer=optax.sgd(1e38), epochs=2),
     FloatingPointError, r"fit: the training loss became (nan|inf) at epoch 1 of 2, step 2 of 2"),
    # 3. Parameters that do not fit the layer.
    ("a 5x5 kernel for a 3x3 Conv", lambda t: MODEL.apply(with_conv_w(jnp.ones((5, 5, 3, 4))), X),
     ValueError, r"in layer '0_conv': Conv: params\['w'\] must have shape \(3, 3, 3, 4\) for "
                 r"this layer's arguments and an input of 3 channels; got \(5, 5, 3, 4\)"),
    ("params of another model", lambda t: MODEL.apply(
        init_params(serial(Conv(8, 3), Relu(), GlobalAvgPool(), Dense(10)), jax.random.key(0),
                    SHAPE)[1], X),
     ValueError, r"in layer '0_conv': Conv: params\['w'\] must have shape \(3, 3, 3, 4\) .*; got "
                 r"\(3, 3, 3, 8\)"),
    ("load_params into another model", lambda t: (checkpoint.save_params(t / "p.npz", PARAMS),
                                                   checkpoint.load_params(
                                                       t / "p.npz", model=BN, in_shape=SHAPE)),
     checkpoint.CheckpointError, r"load_params: .*p\.npz does not match the model's params: "
                                 r"missing keys \['1_batch_norm/offset'"),
    # 4. Dense with a bias of the wrong length.
    ("Dense bias of length 7", lambda t: MODEL.apply(with_dense_b(jnp.zeros(7)), X),
     ValueError, r"in layer '3_dense': Dense: params\['b'\] must have shape \(10,\) for this "
                 r"layer's arguments and an input of 4 features; got \(7,\)"),
    # 5. An int instead of a key.
    ("init_params(key=0)", lambda t: init_params(MODEL, 0, SHAPE),
     TypeError, r"init_params: `key` must be one JAX random key such as jax\.random\.key\(0\); "
                r"got int 0"),
    ("fit(key=0)", lambda t: fit(key=0),
     TypeError, r"fit: `key` must be one JAX random key"),
    ("random_shift(0, x)", lambda t: train.random_shift(0, X),
     TypeError, r"random_shift: `key` must be one JAX random key"),
    ("Dropout key=3", lambda t: Dropout(0.5).apply({}, X, key=3, train=True),
     TypeError, r"Dropout: `key` must be one JAX random key"),
    # 6. Inputs: eager and jitted calls accept the same; hints that fix the shape.
    ("a 3-D input to a model", lambda t: MODEL.apply(PARAMS, X[0]),
     ValueError, r"in layer '0_conv': Conv: `x` must have shape \(N, H, W, C\); got \(8, 8, 3\)\. "
                 r"Add axes with x\[None\] for one \(H, W, C\) image"),
    ("a list of the wrong rank", lambda t: MODEL.apply(PARAMS, [[1.0, 2.0]]),
     ValueError, r"Conv: `x` must have shape \(N, H, W, C\); got \(1, 2\)\. Add axes with "
                 r"x\[None, \.\.\., None\]"),
    ("a string as input", lambda t: MODEL.apply(PARAMS, "image"),
     TypeError, r"serial: `x` must be an array; got str"),
    # 7. Files that are not checkpoints, and what save_params refuses.
    ("random bytes", lambda t: checkpoint.load_params(write(t, "r.npz", bytes(range(256)) * 8)),
     checkpoint.CheckpointError, r"load_params: .*r\.npz is not a checkpoint: its bytes are "
                                 r"neither a zip archive nor a NumPy array"),
    ("a truncated archive", lambda t: checkpoint.load_params(write(
        t, "t.npz", (checkpoint.save_params(t / "full.npz", PARAMS), (t / "full.npz")
                     .read_bytes())[1][:300])),
     checkpoint.CheckpointError, r"load_params: .*t\.npz is not a"),
    ("an object array", lambda t: checkpoint.save_params(
        t / "o.npz", {"w": np.array([None], dtype=object)}),
     TypeError, r"save_params: 'w' is an array of Python objects \(dtype object\), which only "
                r"pickle can store"),
    # 8. Devices and validation data.
    ("fit(devices=[])", lambda t: fit(devices=[]),
     ValueError, r"fit: `devices` must be None \(all devices\) or a non-empty list"),
    ("validation with 1 channel", lambda t: fit(validation=(X[..., :1], Y)),
     ValueError, r"fit: the model cannot take x of `validation` \(shape \(8, 8, 1\) per example\)"),
    # 9. Paths name the user's path.
    ("save into a missing folder", lambda t: checkpoint.save_params(t / "missing" / "x.npz",
                                                                    PARAMS),
     FileNotFoundError, r"save_params: the folder '.*missing' of `path` '.*missing/x\.npz' does "
                        r"not exist"),
    # New layers and state.
    ("Dropout rate 1", lambda t: Dropout(1.0),
     ValueError, r"Dropout: `rate` must be a number in \[0, 1\)"),
    ("BatchNorm momentum 1.5", lambda t: BatchNorm(momentum=1.5),
     ValueError, r"BatchNorm: `momentum` must be a number in \[0, 1\]; got 1\.5"),
    ("FanInSum of mismatched shapes", lambda t: FanInSum().apply({}, (X, X[..., :2])),
     ValueError, r"FanInSum: the inputs must have the same shape to be added; got \(16, 8, 8, "
                 r"3\) and \(16, 8, 8, 2\)"),
    ("Dropout in training without a key", lambda t: serial(Dropout(0.5)).apply({}, X, train=True),
     ValueError, r"in layer '0_dropout': Dropout: training \(train=True\) draws which units to "
                 r"drop and needs a `key`; got key=None"),
    ("a model with state, no state", lambda t: BN.apply(BN_PARAMS, X),
     ValueError, r"serial: the model has state \(layer '1_batch_norm' is a batch_norm\), so "
                 r"apply needs `state`"),
    ("state from another model", lambda t: BN.apply(BN_PARAMS, X, state=init_state(
        serial(Relu(), BatchNorm()), SHAPE)),
     ValueError, r"in layer '1_batch_norm': BatchNorm: state\['mean'\] must have shape \(4,\) "
                 r"for this layer's arguments and 4 channels; got \(3,\)\. The state belongs to "
                 r"another model"),
]


@pytest.mark.parametrize("name, call, error, pattern", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_gets_a_clear_error(name, call, error, pattern, tmp_path):
    with pytest.raises(error, match=pattern) as info:
        call(tmp_path)
    assert "allow_pickle" not in str(info.value)


def test_eager_and_jitted_calls_give_the_same_result_on_numpy_float64():
    x64 = X.astype(np.float64)
    np.testing.assert_array_equal(MODEL.apply(PARAMS, x64), jax.jit(MODEL.apply)(PARAMS, x64))


def test_the_table_covers_every_reproducer_of_the_issue():
    assert len(TABLE) >= 25
    # init_params compiles once per (model, shape): a seed sweep does not recompile.
    from cnnlib.layers.base import _compiled_init

    before = _compiled_init.cache_info().misses
    for seed in range(5):
        init_params(MODEL, jax.random.key(seed), SHAPE)
    assert _compiled_init.cache_info().misses <= before + 1
