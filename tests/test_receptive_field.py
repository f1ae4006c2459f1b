"""receptive_field against two independent measurements (gradient, one-pixel NaN perturbation),
the closed form, and the published values for AlexNet and VGG-16 (Araujo et al. 2019)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlib.layers import (
    AvgPool,
    BlurPool,
    Conv,
    Dense,
    FanInConcat,
    FanOut,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxBlurPool,
    MaxPool,
    Relu,
    Residual,
    Tanh,
    init_params,
    parallel,
    param_shapes,
    serial,
)
from cnnlib.receptive_field import (
    RFRecord,
    closed_form_size,
    effective_receptive_field,
    gradient_support,
    perturbation_support,
    receptive_box,
    receptive_field,
    spread,
)


def alexnet_v2():
    """TF-Slim alexnet_v2, the AlexNet of Araujo et al.'s table."""
    return serial(
        Conv(64, 11, stride=4), Relu(), MaxPool(3, 2),
        Conv(192, 5, padding="SAME"), Relu(), MaxPool(3, 2),
        Conv(384, 3, padding="SAME"), Relu(), Conv(384, 3, padding="SAME"), Relu(),
        Conv(256, 3, padding="SAME"), Relu(), MaxPool(3, 2), Flatten(), Dense(1000),
    )


def vgg16():
    chain = []
    for n, c in [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)]:
        chain += [Conv(c, 3, padding=1), Relu()] * n + [MaxPool(2)]
    return serial(*chain, Flatten(), Dense(1000))


# (end-point, RF, effective stride, effective padding) from the table of the Distill article's
# library, google-research/receptive_field RECEPTIVE_FIELD_TABLE.md (alexnet_v2 and vgg_16).
ALEXNET_TABLE = {0: (11, 4, 0), 2: (19, 8, 0), 3: (51, 8, 16), 6: (99, 16, 32),
                 8: (131, 16, 48), 10: (163, 16, 64), 12: (195, 32, 64)}
VGG16_TABLE = {0: (3, 1, 1), 4: (6, 2, 2), 5: (10, 2, 4), 9: (16, 4, 6), 10: (24, 4, 10),
               12: (32, 4, 14), 16: (44, 8, 18), 17: (60, 8, 26), 19: (76, 8, 34),
               23: (100, 16, 42), 24: (132, 16, 58), 26: (164, 16, 74), 30: (212, 32, 90)}


@pytest.mark.parametrize("model, table", [(alexnet_v2, ALEXNET_TABLE), (vgg16, VGG16_TABLE)])
def test_published_values(model, table):
    records = receptive_field(model(), (-1, 224, 224, 3))
    for index, (r, j, padding) in table.items():
        rec = records[index]
        assert (rec.r, rec.j, rec.start) == ((r, r), (j, j), (-padding, -padding)), rec
    assert records[-1].spatial is False and records[-2].spatial is False


def test_out_hw_matches_init():
    model = alexnet_v2()
    records = receptive_field(model, (-1, 224, 224, 3))
    for i, rec in enumerate(records[:13]):
        out_shape, _ = param_shapes(serial(*model.config["layers"][: i + 1]), (1, 224, 224, 3))
        assert rec.out_hw == tuple(out_shape[1:3])


def test_closed_form_agrees_with_recursion():
    ks, ss = [3, 3, 2, 5, 3, 2, 3], [1, 1, 2, 2, 1, 2, 1]
    model = serial(*[Conv(1, k, stride=s) for k, s in zip(ks, ss)])
    assert receptive_field(model)[-1].r[0] == closed_form_size(ks, ss)


def box_support(shape, box):
    mask = np.zeros(shape, bool)
    (t, b), (l, r) = box
    mask[max(t, 0) : b, max(l, 0) : r] = True
    return mask


def bounding_box(mask):
    rows, cols = np.nonzero(mask)
    return (rows.min(), rows.max() + 1), (cols.min(), cols.max() + 1)


def random_specs(seed):
    """A random chain of 2 to 4 layers: (kind, kernel, stride, dilation, padding)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.choice(["conv", "conv", "avg", "max", "blur"]), int(rng.integers(1, 5)),
         int(rng.integers(1, 4)), int(rng.integers(1, 3)),
         [ "VALID", "SAME", 1, (0, 2)][rng.integers(4)])
        for _ in range(rng.integers(2, 5))
    ]


def build(specs, act):
    chain = []
    for kind, k, s, d, pad in specs:
        if kind == "conv":
            chain += [Conv(3, k, stride=s, dilation=d, padding=pad), act()]
        elif kind == "avg":
            chain.append(AvgPool(k, s, "SAME" if pad == "SAME" else "VALID"))
        elif kind == "max":
            chain.append(MaxPool(k, s, "SAME" if pad == "SAME" else "VALID"))
        else:
            chain.append(BlurPool(s, k))
    return serial(*chain)


def unit_inside(rec, size):
    """An output unit whose receptive field lies inside the image, or None."""
    i = -(-max(-rec.start[0], 0) // rec.j[0])  # first unit whose box starts at row >= 0
    j = -(-max(-rec.start[1], 0) // rec.j[1])
    (t, b), (l, r) = receptive_box(rec, i, j)
    if b <= size and r <= size and i < rec.out_hw[0] and j < rec.out_hw[1]:
        return i, j
    return None


SIZE = 40


def comparable(specs):
    """True when the chain fits SIZE x SIZE and has a unit whose field lies inside it."""
    try:
        rec = receptive_field(build(specs, Tanh), (1, SIZE, SIZE, 2))[-1]
    except ValueError:
        return False
    return unit_inside(rec, SIZE) is not None


MODELS = [specs for specs in map(random_specs, range(60)) if comparable(specs)][:10]


@pytest.mark.parametrize("specs", MODELS, ids=[str(i) for i in range(len(MODELS))])
def test_formula_vs_gradient_and_perturbation(specs):
    rec = receptive_field(build(specs, Tanh), (1, SIZE, SIZE, 2))[-1]
    unit = unit_inside(rec, SIZE)
    box = box_support((SIZE, SIZE), receptive_box(rec, *unit))
    holes = any(d > 1 or k < s for kind, k, s, d, _ in specs)
    x = jax.random.normal(jax.random.key(1), (1, SIZE, SIZE, 2))
    models = {act: build(specs, act) for act in (Relu, Tanh)}
    params = init_params(models[Relu], jax.random.key(0), (1, SIZE, SIZE, 2))[1]
    # ReLU network, positive weights, one pixel set to +inf: the change cannot be absorbed.
    positive = jax.tree.map(lambda w: jnp.abs(w) + 0.01, params)
    exact = perturbation_support(lambda x: models[Relu].apply(positive, x), jnp.abs(x), unit)
    assert not (exact & ~box).any()
    assert bounding_box(exact) == bounding_box(box)
    if not holes:
        assert exact[box].all()
    for act, model in models.items():
        grad = gradient_support(lambda x: model.apply(params, x), x, unit)
        assert not (grad & ~box).any()
        if act is Tanh and not any(kind == "max" for kind, *_ in specs):
            assert (grad == exact).all()  # tanh' > 0 and no max: every path carries gradient


@pytest.mark.parametrize("shortcut", [None, "projection"])
def test_residual_net_by_formula_and_gradient(shortcut):
    """A residual block sees the union of its branches: here the inner branch's field."""
    proj = None if shortcut is None else Conv(4, 1, stride=2)
    stride = 1 if shortcut is None else 2
    net = serial(
        Conv(4, 3, padding="SAME"), Tanh(),
        Residual(serial(Conv(4, 3, stride=stride, padding="SAME"), Tanh(),
                        Conv(4, 5, padding="SAME", dilation=1)), proj),
        Tanh(),
        Residual(serial(Conv(4, 3, padding="SAME"), Tanh(), Conv(4, 3, padding="SAME"))),
    )
    size = 24
    rec = receptive_field(net, (1, size, size, 2))[-1]
    want_r = 3 + 2 + 4 * stride + 2 * stride + 2 * stride
    assert rec.r == (want_r, want_r) and rec.j == (stride, stride)
    _, params = init_params(net, jax.random.key(0), (1, size, size, 2))
    x = jax.random.normal(jax.random.key(1), (1, size, size, 2))
    unit = (size // stride // 2, size // stride // 2)
    box = box_support((size, size), receptive_box(rec, *unit))
    grad = gradient_support(lambda x: net.apply(params, x), x, unit)
    assert (grad == box).all()  # tanh' > 0: every pixel of the box carries gradient
    # The identity branch alone sees one pixel; a block f(x) + x sees what f sees.
    assert receptive_field(Residual(Conv(1, 5, padding="SAME")))[0].r == (5, 5)
    assert receptive_field(serial(FanOut(2), parallel(Conv(1, 3, padding="SAME"),
                                                      Conv(1, 5, padding="SAME")),
                                  FanInConcat()), (1, 9, 9, 1))[-1].r == (5, 5)


def test_enough_random_models():
    assert len(MODELS) == 10


def test_dilation_leaves_holes():
    model = Conv(1, 3, dilation=2)
    _, params = init_params(model, jax.random.key(0), (1, 9, 9, 1))
    support = perturbation_support(lambda x: model.apply(params, x), jnp.ones((1, 9, 9, 1)), (0, 0))
    assert receptive_field(model)[0].r == (5, 5)
    assert support.sum() == 9 and support[0:5:2, 0:5:2].all()


def test_border_unit_sees_box_clipped_to_the_image():
    model = serial(Conv(2, 3, padding="SAME"), Relu(), Conv(2, 3, padding="SAME", stride=2))
    rec = receptive_field(model, (1, 10, 10, 1))[-1]
    _, params = init_params(model, jax.random.key(0), (1, 10, 10, 1))
    fn = lambda x: model.apply(params, x)
    x = jnp.ones((1, 10, 10, 1))
    for unit in [(0, 0), (4, 4), (0, 3)]:
        expected = box_support((10, 10), receptive_box(rec, *unit))
        assert (perturbation_support(fn, x, unit) == expected).all()


def test_nested_chain_is_one_record_composed():
    nested = receptive_field(serial(Conv(1, 3), MaxBlurPool(2, 2, 3)))
    flat = receptive_field(serial(Conv(1, 3), MaxPool(2, 1), BlurPool(2, 3)))
    assert len(nested) == 2 and nested[1][2:] == flat[2][2:]


def test_global_layers_end_the_chain():
    recs = receptive_field(serial(Conv(1, 3), GlobalAvgPool(), Dense(2)))
    assert [r.spatial for r in recs] == [True, False, False]
    assert recs[1].r is None and recs[1].name == "global_avg_pool"
    with pytest.raises(ValueError, match="receptive_box: `record` must be a spatial RFRecord"):
        receptive_box(recs[1], 0, 0)


def test_list_of_layers_and_single_layer():
    assert receptive_field([Conv(1, 3), Conv(1, 3)])[-1].r == (5, 5)
    assert receptive_field(Conv(1, (3, 5), stride=(1, 2)))[0][2:4] == ((3, 5), (1, 2))


def test_effective_receptive_field_of_constant_kernels():
    # n convolutions with the 3x3 box filter: the gradient is the n-fold convolution of
    # [1, 1, 1] / 3 with itself along each axis, variance n * 2/3.
    for n in (1, 4, 9):
        w = jnp.ones((3, 3, 1, 1)) / 9
        model = serial(*[Conv(1, 3, padding="SAME", use_bias=False)] * n)
        params = {f"{i:0{len(str(n - 1))}d}_conv": {"w": w} for i in range(n)}
        erf = effective_receptive_field(lambda x: model.apply(params, x), (1, 41, 41, 1))
        assert spread(erf) == pytest.approx(np.sqrt(2 * n / 3), rel=1e-5)
        assert (erf > 0).sum() == (2 * n + 1) ** 2


def test_spread_of_a_point_and_a_pair():
    assert spread(np.eye(1)) == 0.0
    w = np.zeros((5, 5))
    w[2, 0] = w[2, 4] = 1.0  # distance 2 from the centre along one axis only
    assert spread(w) == pytest.approx(np.sqrt(4 / 2))


def test_errors():
    with pytest.raises(TypeError, match="receptive_field: `model` must be a Layer"):
        receptive_field("conv")
    with pytest.raises(TypeError, match="receptive_field: `in_shape` must be None or a tuple"):
        receptive_field(Conv(1, 3), in_shape="28x28")
    with pytest.raises(ValueError, match=r"receptive_field: `in_shape` must be \(N, H, W, C\)"):
        receptive_field(Conv(1, 3), in_shape=(28, 28))
    odd = Layer(lambda k, s: (s, {}), lambda p, x: x, "attention", {"heads": 4})
    with pytest.raises(ValueError, match=r"layer 1 \('attention'\) is not supported"):
        receptive_field(serial(Conv(1, 3), odd))
    with pytest.raises(ValueError, match="depend on the input size; got in_shape=None"):
        receptive_field(Conv(1, 3, stride=2, padding="SAME"))
    with pytest.raises(ValueError, match="does not fit its input"):
        receptive_field(serial(Conv(1, 5), Conv(1, 5)), (1, 6, 6, 1))
    with pytest.raises(ValueError, match="ends the spatial chain inside a nested chain"):
        receptive_field(serial(serial(Conv(1, 3), Flatten())))
    fn = lambda x: x
    with pytest.raises(ValueError, match="gradient_support: `index` must lie in the output grid"):
        gradient_support(fn, jnp.ones((1, 4, 4, 1)), (4, 0))
    with pytest.raises(ValueError, match="perturbation_support: `fn` must return a 4-D"):
        perturbation_support(lambda x: x.reshape(1, -1), jnp.ones((1, 4, 4, 1)), (0, 0))
    with pytest.raises(ValueError, match="spread: `weights` must be a non-negative"):
        spread(-np.ones((3, 3)))
    with pytest.raises(ValueError, match="closed_form_size: `kernel_sizes` and `strides`"):
        closed_form_size([3, 3], [1])
