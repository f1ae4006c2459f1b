"""cnnlib: the small JAX library that the executable textbook "CNNs, derived" teaches with.

Layout conventions, everywhere: activations are NHWC `(N, H, W, C)`, kernels are HWIO
`(kh, kw, in_channels, out_channels)`, inputs are batched and 4-D.
"""

# Data (chapter 00).
from cnnlib.data import CLASS_NAMES, fashion_mnist, sample_photo, to_float

# Operations (chapters 01-02): conv.py, pool.py; oracles in cnnlib.reference.
from cnnlib import reference
from cnnlib.conv import conv2d, conv_output_size
from cnnlib.pool import (
    avg_pool,
    binomial_filter,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
)

# Layers, models, training, checkpoints (chapters 03-07): layers/, models.py, train.py,
# checkpoint.py.
from cnnlib import checkpoint, layers, models, train
from cnnlib.checkpoint import load_params, load_state, save_params
from cnnlib.models import param_count
from cnnlib.train import evaluate, fit, predict, random_shift, split_validation

__version__ = "0.1.0"
