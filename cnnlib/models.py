"""Model factories: MLP, locally connected net, CNN, the three at an equal parameter budget;
LeNet-5; residual networks and their plain twins; the Fashion-MNIST record network.

Introduced in chapter 03, notebooks/03-locality.ipynb (the ablation ladder MLP -> locally
connected -> CNN); `cnn` returns in chapters 04-06; `lenet5` and `resnet` in chapter 07.

Every factory returns a `cnnlib.layers.serial` chain, so `init_params(model, key, in_shape)`
draws its parameters and `param_shapes` counts them without data. The chain's ``config`` keeps
``"layers"`` (as for any `serial`) and adds the factory's arguments, e.g. ``config["channels"]``,
so a model built by `equal_budget` says which widths were chosen.

`cnn` and `lcn` have the same structure, block for block: ``[conv or locally connected 3x3,
SAME padding, ReLU, 2x2 pooling] x len(channels)``, then the head (Flatten or global average
pooling) and one Dense layer to the logits. They differ only in weight sharing.
"""

from __future__ import annotations

import math
from typing import Any

import jax

from cnnlib._validate import check_positive_int
from cnnlib.layers import (
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LocallyConnected,
    MaxBlurPool,
    MaxPool,
    Relu,
    Residual,
    param_shapes,
    serial,
)

POOLS = ("max", "avg", "blur", None)
HEADS = ("flatten", "global")
NORMS = ("batch", None)


def param_count(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or of `jax.ShapeDtypeStruct` leaves).

    Args:
        params: nested dicts of arrays, e.g. from `init_params` or `param_shapes`.

    Returns:
        The total size of all leaves, a Python int.

    Example:
        >>> _, params = init_params(serial(Flatten(), Dense(10)), jax.random.key(0), (-1, 28, 28, 1))
        >>> param_count(params)  # 784 * 10 weights + 10 biases
        7850

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    total = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        shape = getattr(leaf, "shape", None)
        if shape is None:
            raise TypeError(
                f"param_count: `params` must be a pytree of arrays; got "
                f"{type(leaf).__name__} at {jax.tree_util.keystr(path) or 'the top'}. Pass the "
                f"params from init_params(model, key, in_shape)."
            )
        total += math.prod(shape)
    return total


def mlp(hidden: Any = (128,), num_classes: int = 10) -> Layer:
    """Multilayer perceptron: Flatten, then ``[Dense(h), ReLU]`` per hidden width, Dense(logits).

    Args:
        hidden: widths of the hidden layers, a tuple of ints >= 1 (empty: a linear classifier).
        num_classes: output width, >= 1.

    Returns:
        A `serial` model mapping (N, H, W, C) (or (N, features)) to logits (N, num_classes).

    Example:
        >>> out_shape, params = init_params(mlp((128,)), jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params)  # 784 * 128 + 128 + 128 * 10 + 10
        ((-1, 10), 101770)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    hidden = _widths(hidden, "hidden", "mlp", allow_empty=True)
    num_classes = check_positive_int(num_classes, "num_classes", "mlp")
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width), Relu()]
    layers.append(Dense(num_classes, w_init="lecun"))  # linear logits: gain 1
    return _with_config(serial(*layers), model="mlp", hidden=hidden, num_classes=num_classes)


def cnn(
    channels: Any = (16, 32),
    kernel_size: Any = 3,
    num_classes: int = 10,
    pool: str | None = "max",
    head: str = "flatten",
) -> Layer:
    """Convolutional net: ``[Conv(c, kernel_size, SAME), ReLU, pool]`` per width, head, Dense.

    Args:
        channels: out_channels of each conv block, a non-empty tuple of ints >= 1.
        kernel_size: int or (kh, kw), the same in every block.
        num_classes: output width, >= 1.
        pool: the downsampling after each block: "max" (`MaxPool(2)`), "avg" (`AvgPool(2)`),
            "blur" (`MaxBlurPool()`, Zhang 2019: max with stride 1, then a blurred stride 2;
            the same output sizes as "max"), or None (no downsampling).
        head: "flatten" (`Flatten`, every position has its own weights in the last Dense) or
            "global" (`GlobalAvgPool`: mean over positions, translation invariant).

    Returns:
        A `serial` model mapping (N, H, W, C) to logits (N, num_classes); with pooling, each
        block halves H and W (rounding up for "blur", down for "max" and "avg").

    Example:
        >>> out_shape, params = init_params(cnn((16, 32)), jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params)  # 160 + 4640 + 7 * 7 * 32 * 10 + 10
        ((-1, 10), 20490)

    Introduced in chapter 03, notebooks/03-locality.ipynb; used in chapters 04-06.
    """
    return _conv_net(Conv, "cnn", channels, kernel_size, num_classes, pool, head)


def lcn(
    channels: Any = (16, 32),
    kernel_size: Any = 3,
    num_classes: int = 10,
    pool: str | None = "max",
    head: str = "flatten",
) -> Layer:
    """Locally connected net: `cnn` with `LocallyConnected` in place of `Conv` (no sharing).

    The same blocks, padding, pooling and head as `cnn` with the same arguments; only the
    weights are no longer shared across positions, so each block has H * W times the
    parameters (H, W: the block's output size). The model is fixed to the image size it was
    initialised for.

    Args:
        channels, kernel_size, num_classes, pool, head: as in `cnn`.

    Returns:
        A `serial` model mapping (N, H, W, C) to logits (N, num_classes).

    Example:
        >>> out_shape, params = init_params(lcn((4, 8)), jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params)  # 784 * 40 + 196 * 296 + 7 * 7 * 8 * 10 + 10
        ((-1, 10), 93306)

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    return _conv_net(LocallyConnected, "lcn", channels, kernel_size, num_classes, pool, head)


def lenet5(num_classes: int = 10) -> Layer:
    """LeNet-5 (LeCun et al. 1998) for 28 x 28 images, with ReLU and max pooling.

    Conv(6, 5, SAME) - ReLU - MaxPool(2) - Conv(16, 5) - ReLU - MaxPool(2) - Flatten -
    Dense(120) - ReLU - Dense(84) - ReLU - Dense(num_classes). SAME padding in the first layer
    stands in for the original's 32 x 32 input (28 padded by 2), so the second conv sees
    14 x 14 and the Flatten 5 x 5 x 16 = 400 features, as in the paper. ReLU and max pooling
    replace the original's scaled tanh and trainable subsampling.

    Returns:
        A `serial` model mapping (N, 28, 28, C) to logits (N, num_classes); 61,706 parameters
        for one input channel and 10 classes.

    Example:
        >>> out_shape, params = init_params(lenet5(), jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params)
        ((-1, 10), 61706)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb (benchmarks/bench_train_step.py).
    """
    num_classes = check_positive_int(num_classes, "num_classes", "lenet5")
    model = serial(
        Conv(6, 5, padding="SAME"), Relu(), MaxPool(2),  # (N, 14, 14, 6)
        Conv(16, 5), Relu(), MaxPool(2),  # (N, 5, 5, 16)
        Flatten(),  # (N, 400)
        Dense(120), Relu(), Dense(84), Relu(),
        Dense(num_classes, w_init="lecun"),
    )
    return _with_config(model, model="lenet5", num_classes=num_classes)


def resnet(
    channels: Any = (16, 32, 64),
    blocks: int = 1,
    num_classes: int = 10,
    *,
    skip: bool = True,
    norm: str | None = "batch",
    dropout: float = 0.0,
) -> Layer:
    """A small residual network (He et al. 2016) for 28 x 28 or 32 x 32 images, or its plain twin.

    A stem ``Conv(channels[0], 3, SAME)``, then one stage per entry of `channels`, each of
    `blocks` basic blocks, then global average pooling, optional `Dropout` and the logits::

        block(c, stride) = Residual(serial(conv3x3(c, stride), norm, ReLU, conv3x3(c), norm),
                                    shortcut), ReLU

    The first block of every stage after the first halves H and W (stride 2) and changes the
    channels, so its shortcut is a projection ``Conv(c, 1, stride=2)`` (with its own norm);
    every other shortcut is the identity. With ``skip=False`` every block is the same chain
    without the shortcut: a *plain* network of the same depth, widths and parameters less the
    projections, for the degradation experiment of chapter 07. Convolutions followed by
    BatchNorm have no bias (BatchNorm's offset does that job).

    Depth (layers with weights): ``2 + 2 * blocks * len(channels)``. With the defaults (8
    layers), 28 x 28 x 1 inputs and 10 classes: 77,754 parameters and 672 numbers of state
    (running means and variances); the plain twin, without the two projections, has 75,002
    parameters and 480 numbers of state.

    Args:
        channels: the width of each stage, a non-empty tuple of ints >= 1.
        blocks: basic blocks per stage, >= 1.
        num_classes: output width, >= 1.
        skip: True for residual blocks, False for the plain twin.
        norm: "batch" (`BatchNorm` after every convolution; the model has state) or None.
        dropout: rate of a `Dropout` before the last layer; 0 for none.

    Returns:
        A `serial` model mapping (N, H, W, C) to logits (N, num_classes), H and W halved by
        every stage after the first (rounded up).

    Example:
        >>> model = resnet()
        >>> out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params), param_count(init_state(model, (-1, 28, 28, 1)))
        ((-1, 10), 77754, 672)

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    where = "resnet"
    channels = _widths(channels, "channels", where)
    blocks = check_positive_int(blocks, "blocks", where)
    num_classes = check_positive_int(num_classes, "num_classes", where)
    if not isinstance(skip, bool):
        raise TypeError(f"{where}: `skip` must be True or False; got {skip!r}.")
    if norm not in NORMS:
        raise ValueError(
            f"{where}: `norm` must be one of {NORMS}; got {norm!r}. Use norm=\"batch\"."
        )

    def conv(c, kernel_size, stride=1):  # a convolution and its normalisation
        layers = [Conv(c, kernel_size, stride=stride, padding="SAME", use_bias=norm is None)]
        return layers + ([BatchNorm()] if norm == "batch" else [])

    layers = [*conv(channels[0], 3), Relu()]  # stem: (N, H, W, channels[0])
    width = channels[0]
    for stage, c in enumerate(channels):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            inner = serial(*conv(c, 3, stride), Relu(), *conv(c, 3))
            if not skip:
                layers += [inner, Relu()]
            elif stride == 1 and c == width:
                layers += [Residual(inner), Relu()]
            else:  # projection shortcut: the shapes change
                layers += [Residual(inner, serial(*conv(c, 1, stride))), Relu()]
            width = c
    layers.append(GlobalAvgPool())  # (N, channels[-1])
    if dropout:
        layers.append(Dropout(dropout))
    layers.append(Dense(num_classes, w_init="lecun"))
    return _with_config(serial(*layers), model="resnet", channels=channels, blocks=blocks,
                        num_classes=num_classes, skip=skip, norm=norm, dropout=dropout)


def vgg_bn(
    stages: Any = ((32,), (32, 32), (64, 64)),
    num_classes: int = 10,
) -> Layer:
    """A small VGG-style network with batch normalisation: the Fashion-MNIST record model.

    Stages of 3x3 SAME convolutions with a ``MaxPool(2)`` between consecutive stages, then
    global average pooling and one Dense layer to the logits (Simonyan & Zisserman 2015, with
    Ioffe & Szegedy's normalisation and Lin et al.'s pooled head). The first convolution sees
    the image and keeps its bias, without normalisation; every later one is
    ``Conv(c, 3, use_bias=False), BatchNorm, ReLU``::

        conv3x3(32), ReLU, pool, [conv3x3(32), BN, ReLU] x 2, pool, [conv3x3(64), BN, ReLU] x 2,
        global average pool, Dense(10)

    With the defaults, 28 x 28 x 1 inputs and 10 classes: 75,082 parameters
    (320 + 2 x 9,280 + 18,560 + 36,992 + 650) and 384 numbers of state (the running means and
    variances of 32 + 32 + 64 + 64 channels); about 6.5 million multiply-adds per image. Its
    Fashion-MNIST recipe (batch 64 split over two CPU devices, Adam with a cosine decay from
    6e-3, 20 epochs, label smoothing 0.1, random shifts of one pixel; about 4 minutes on two
    CPU cores) reaches a 5-seed test accuracy of 0.9375 ± 0.0014, and 0.9404 ± 0.0017 with
    predictions averaged over one-pixel shifts (`invariance.shift_averaged`; 0.9400 ± 0.0014
    over ten seeds); details in benchmarks/README.md, "Fashion-MNIST".

    Args:
        stages: one tuple of conv widths per stage, each a non-empty tuple of ints >= 1.
        num_classes: output width, >= 1.

    Returns:
        A `serial` model with state mapping (N, H, W, C) to logits (N, num_classes), H and W
        halved (rounded down) between stages.

    Example:
        >>> model = vgg_bn()
        >>> out_shape, params = init_params(model, jax.random.key(0), (-1, 28, 28, 1))
        >>> out_shape, param_count(params), param_count(init_state(model, (-1, 28, 28, 1)))
        ((-1, 10), 75082, 384)

    Introduced in chapter 07 (quoted with the record), notebooks/07-going-deeper.ipynb;
    trained by benchmarks/fashion_mnist_results.py --models vgg-bn.
    """
    where = "vgg_bn"
    if not isinstance(stages, (tuple, list)) or not stages:
        raise ValueError(
            f"{where}: `stages` must be a non-empty tuple of tuples of widths; got {stages!r}. "
            "Use e.g. ((32,), (32, 32), (64, 64))."
        )
    stages = tuple(_widths(s, f"stages[{i}]", where) for i, s in enumerate(stages))
    num_classes = check_positive_int(num_classes, "num_classes", where)
    layers = []
    for i, widths in enumerate(stages):
        if i:
            layers.append(MaxPool(2))
        for c in widths:
            if not layers:  # the first convolution: bias, no normalisation
                layers += [Conv(c, 3, padding="SAME"), Relu()]
            else:
                layers += [Conv(c, 3, padding="SAME", use_bias=False), BatchNorm(), Relu()]
    layers += [GlobalAvgPool(), Dense(num_classes, w_init="lecun")]
    return _with_config(serial(*layers), model="vgg_bn", stages=stages, num_classes=num_classes)


def equal_budget(
    budget: int,
    in_shape: Any = (-1, 28, 28, 1),
    num_classes: int = 10,
    *,
    kernel_size: Any = 3,
    pool: str | None = "max",
    head: str = "flatten",
) -> dict[str, Layer]:
    """An MLP, a locally connected net and a CNN, each within 5% of `budget` parameters.

    The ablation ladder of chapter 03 at (nearly) equal parameter counts. The three have the
    same depth: two hidden layers each, then the logits layer.

    - "mlp": ``mlp((h, h))``, the width h chosen to come closest to the budget.
    - "lcn" and "cnn": ``lcn((c1, c2), ...)`` and ``cnn((c1, c2), ...)`` with the same
      `kernel_size`, `pool` and `head`; among the width pairs within 2% of the budget (5% if
      none is within 2%), the one whose ratio c2 / c1 is closest to 2 (the usual doubling),
      then the closest count. A CNN needs far wider layers than an LCN for the same budget:
      that is the point of the comparison.

    The parameter count of each family is a polynomial in its widths (bilinear in (c1, c2), a
    quadratic in h); its coefficients are read off a few `param_shapes` calls, so the search
    walks the same chain as `init` and costs no training and no data.

    Args:
        budget: the target number of parameters, >= 1.
        in_shape: the input shape with batch axis, e.g. ``(-1, 28, 28, 1)``.
        num_classes: output width, >= 1.
        kernel_size, pool, head: as in `cnn`, for both "lcn" and "cnn".

    Returns:
        ``{"mlp": Layer, "lcn": Layer, "cnn": Layer}``; each model's ``config`` has its widths
        (``config["hidden"]`` or ``config["channels"]``).

    Raises:
        ValueError: the budget is too small for the narrowest locally connected net (the
            message gives the smallest budget that works), or no widths come within 5%. For
            28 x 28 inputs this happens below about 15,000 parameters, where one more channel
            in an LCN layer adds some 2,500 parameters (11,000-14,000 fail, 15,000 and up
            work).

    Example:
        >>> models = equal_budget(100_000)
        >>> {name: param_count(param_shapes(m, (-1, 28, 28, 1))[1]) for name, m in models.items()}
        {'mlp': 99670, 'lcn': 101048, 'cnn': 100266}

    Introduced in chapter 03, notebooks/03-locality.ipynb.
    """
    where = "equal_budget"
    budget = check_positive_int(budget, "budget", where)
    num_classes = check_positive_int(num_classes, "num_classes", where)
    if not isinstance(in_shape, (tuple, list)) or len(in_shape) != 4:
        raise ValueError(
            f"{where}: `in_shape` must be an image shape (N, H, W, C); got {in_shape!r}. "
            f"Use e.g. (-1, 28, 28, 1)."
        )
    in_shape = tuple(in_shape)

    def count(model):
        return param_count(param_shapes(model, in_shape)[1])

    models = {"mlp": _fit_mlp(budget, num_classes, count, where)}
    for name, factory in (("lcn", lcn), ("cnn", cnn)):
        def build(c1, c2, factory=factory):
            return factory((c1, c2), kernel_size, num_classes, pool, head)

        models[name] = _fit_pair(name, budget, build, count, where)
    return models


# --- Helpers ----------------------------------------------------------------------------------


def _conv_net(block, name, channels, kernel_size, num_classes, pool, head) -> Layer:
    channels = _widths(channels, "channels", name)
    num_classes = check_positive_int(num_classes, "num_classes", name)
    if pool not in POOLS:
        raise ValueError(
            f"{name}: `pool` must be one of {POOLS}; got {pool!r}. Use pool=\"max\"."
        )
    if head not in HEADS:
        raise ValueError(
            f"{name}: `head` must be one of {HEADS}; got {head!r}. Use head=\"flatten\" (a "
            f"weight per position) or head=\"global\" (average over positions)."
        )
    downsample = {"max": lambda: MaxPool(2), "avg": lambda: AvgPool(2),
                  "blur": lambda: MaxBlurPool(), None: lambda: None}[pool]
    layers = []
    for width in channels:
        layers += [block(width, kernel_size, padding="SAME"), Relu()]  # (N, H, W, width)
        if pool is not None:
            layers.append(downsample())  # (N, H / 2, W / 2, width)
    layers += [Flatten() if head == "flatten" else GlobalAvgPool(),
               Dense(num_classes, w_init="lecun")]
    # kernel_size as the first block normalised it: (kh, kw).
    return _with_config(
        serial(*layers), model=name, channels=channels,
        kernel_size=layers[0].config["kernel_size"], num_classes=num_classes, pool=pool,
        head=head,
    )


def _with_config(chain: Layer, **config) -> Layer:
    return chain._replace(config={**chain.config, **config})


def _widths(value, name, where, allow_empty=False) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        raise TypeError(
            f"{where}: `{name}` must be a tuple of layer widths; got {value!r}. Use e.g. "
            f"{name}=({value!r},) for one layer."
        )
    if not value and not allow_empty:
        raise ValueError(
            f"{where}: `{name}` must have at least one width; got {value!r}. Use e.g. "
            f"{name}=(16, 32)."
        )
    return tuple(check_positive_int(v, f"{name}[{i}]", where) for i, v in enumerate(value))


def _fit_mlp(budget, num_classes, count, where) -> Layer:
    # count(h) = a h^2 + b h + c exactly (two hidden layers); read a, b, c off h = 1, 2, 3.
    n1, n2, n3 = (count(mlp((h, h), num_classes)) for h in (1, 2, 3))
    a = (n3 - 2 * n2 + n1) / 2
    b = n2 - n1 - 3 * a
    c = n1 - a - b
    root = (-b + math.sqrt(max(b * b - 4 * a * (c - budget), 0.0))) / (2 * a)
    h = min((max(1, math.floor(root)), max(1, math.ceil(root))),
            key=lambda h: abs(a * h * h + b * h + c - budget))
    model = mlp((h, h), num_classes)
    _check_within(count(model), budget, "mlp", where)
    return model


def _fit_pair(name, budget, build, count, where) -> Layer:
    # count(c1, c2) = k0 + k1 c1 + k2 c2 + k12 c1 c2 exactly for two blocks (conv1 is linear in
    # c1, conv2 bilinear in (c1, c2), the head linear in c2): read it off four corners.
    n11, n12, n21, n22 = (count(build(c1, c2)) for c1, c2 in ((1, 1), (1, 2), (2, 1), (2, 2)))
    k12 = n22 - n21 - n12 + n11
    k2 = n12 - n11 - k12
    k1 = n21 - n11 - k12
    k0 = n11 - k1 - k2 - k12

    def poly(c1, c2):
        return k0 + k1 * c1 + k2 * c2 + k12 * c1 * c2

    if poly(1, 1) > budget * 1.05:
        raise ValueError(
            f"{where}: `budget` {budget} is too small for the narrowest {name} (widths (1, 1): "
            f"{poly(1, 1)} parameters). Use budget >= {math.ceil(poly(1, 1) / 1.05)}, or a "
            f"smaller in_shape."
        )
    candidates = []  # (relative error, c1, c2)
    c1 = 1
    while poly(c1, 1) <= budget * 1.05:
        root = (budget - k0 - k1 * c1) / (k2 + k12 * c1)  # the real c2 for this c1
        for c2 in {max(1, math.floor(root)), max(1, math.ceil(root))}:
            candidates.append((abs(poly(c1, c2) - budget) / budget, c1, c2))
        c1 += 1
    for tolerance in (0.02, 0.05):
        close = [cand for cand in candidates if cand[0] <= tolerance]
        if close:
            _, c1, c2 = min(close, key=lambda e: (abs(math.log(e[2] / (2 * e[1]))), e[0]))
            model = build(c1, c2)
            _check_within(count(model), budget, name, where)
            return model
    best = min(candidates)
    raise ValueError(
        f"{where}: no widths (c1, c2) bring the {name} within 5% of `budget` {budget}; the "
        f"closest is {best[1:]} with {poly(*best[1:])} parameters. Choose another budget."
    )


def _check_within(n, budget, name, where):
    if abs(n - budget) > 0.05 * budget:  # cannot happen if the polynomial is exact
        raise ValueError(
            f"{where}: the {name} has {n} parameters, more than 5% from `budget` {budget}. "
            f"Choose another budget."
        )
