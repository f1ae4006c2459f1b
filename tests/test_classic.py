"""cnnlib.classic: parameter counts equal torchvision's published ones, multiply-adds equal the
published figures, output shapes, receptive fields; all from specifications, without data."""

from __future__ import annotations

import doctest

import jax
import pytest

from cnnlib import classic, flops
from cnnlib.layers import init_state, param_shapes
from cnnlib.models import param_count
from cnnlib.receptive_field import receptive_field

IMAGENET = (-1, 224, 224, 3)


@pytest.mark.parametrize("factory, params, gmacs", [
    (classic.alexnet, 61_100_840, 0.71),  # torchvision's model table: params, GFLOPS (= GMACs)
    (classic.vgg16, 138_357_544, 15.47),
    (classic.resnet18, 11_689_512, 1.81),
])
def test_counts_equal_the_published_ones(factory, params, gmacs):
    model = factory()
    out_shape, shapes = param_shapes(model, IMAGENET)
    assert out_shape == (-1, 1000) and param_count(shapes) == params
    assert round(flops.model_flops(model, IMAGENET) / 2e9, 2) == gmacs


def test_resnet18_state_and_receptive_fields():
    assert param_count(init_state(classic.resnet18(), IMAGENET)) == 9600  # 2 x 4800 channels
    last = {name: [r for r in receptive_field(f(), IMAGENET) if r.spatial][-1]
            for name, f in (("alexnet", classic.alexnet), ("vgg16", classic.vgg16))}
    assert last["alexnet"].r == (195, 195) and last["vgg16"].r == (212, 212)
    assert [r for r in receptive_field(classic.resnet18(), IMAGENET) if r.spatial][-1].j == (32, 32)


def test_docstring_examples():
    failures, tried = doctest.testmod(
        classic, extraglobs={"param_count": param_count, "param_shapes": param_shapes,
                             "jax": jax}, report=False)
    assert tried == 3 and failures == 0
