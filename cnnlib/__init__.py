"""cnnlib: the small JAX library that the executable textbook "CNNs, derived" teaches with.

Layout conventions, everywhere: activations are NHWC `(N, H, W, C)`, kernels are HWIO
`(kh, kw, in_channels, out_channels)`, inputs are batched and 4-D.
"""

from cnnlib.data import CLASS_NAMES, fashion_mnist, sample_photo

__version__ = "0.1.0"
