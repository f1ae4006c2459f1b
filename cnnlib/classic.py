"""The classic ImageNet networks, built from their specifications: AlexNet, VGG-16, ResNet-18.

Introduced in chapter 07, notebooks/07-going-deeper.ipynb, where their parameters, FLOPs and
receptive fields are computed without ever running them (LeNet-5 is `cnnlib.models.lenet5`).
Each follows the layer sizes of torchvision's model of the same name, so the parameter counts
can be checked against the published ones: AlexNet 61,100,840, VGG-16 138,357,544, ResNet-18
11,689,512 (BatchNorm's scale and offset are parameters; its running averages are state).
They take (N, 224, 224, 3) images and return 1000 logits.
"""

from __future__ import annotations

from cnnlib.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    MaxPool,
    Relu,
    Residual,
    serial,
)


def alexnet(num_classes: int = 1000) -> Layer:
    """AlexNet (Krizhevsky et al. 2012) in torchvision's single-GPU form: 61,100,840 parameters.

    Five convolutions (64, 192, 384, 256, 256 channels; 11 x 11 with stride 4, then 5 x 5, then
    3 x 3), three 3 x 3 max poolings with stride 2, and three dense layers (4096, 4096,
    num_classes) with dropout 0.5 before the first two. On 224 x 224 inputs the last pooling
    gives 6 x 6 x 256 = 9216 features.

    Example:
        >>> param_count(param_shapes(alexnet(), (-1, 224, 224, 3))[1])
        61100840

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    return serial(
        Conv(64, 11, stride=4, padding=2), Relu(), MaxPool(3, 2),  # (N, 27, 27, 64)
        Conv(192, 5, padding=2), Relu(), MaxPool(3, 2),  # (N, 13, 13, 192)
        Conv(384, 3, padding=1), Relu(), Conv(256, 3, padding=1), Relu(),
        Conv(256, 3, padding=1), Relu(), MaxPool(3, 2),  # (N, 6, 6, 256)
        Flatten(), Dropout(0.5), Dense(4096), Relu(), Dropout(0.5), Dense(4096), Relu(),
        Dense(num_classes, w_init="lecun"),
    )


def vgg16(num_classes: int = 1000) -> Layer:
    """VGG-16 (Simonyan & Zisserman 2015, configuration D): 138,357,544 parameters.

    Thirteen 3 x 3 convolutions with padding 1 in five blocks (64, 128, 256, 512, 512 channels;
    2, 2, 3, 3, 3 convolutions), each block closed by a 2 x 2 max pooling, then dense layers of
    4096, 4096 and num_classes units with dropout 0.5 before the second and third.

    Example:
        >>> param_count(param_shapes(vgg16(), (-1, 224, 224, 3))[1])
        138357544

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """
    layers = []
    for repeats, width in ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)):
        layers += [Conv(width, 3, padding=1), Relu()] * repeats + [MaxPool(2)]
    return serial(*layers, Flatten(),  # (N, 7 * 7 * 512)
                  Dense(4096), Relu(), Dropout(0.5), Dense(4096), Relu(), Dropout(0.5),
                  Dense(num_classes, w_init="lecun"))


def resnet18(num_classes: int = 1000) -> Layer:
    """ResNet-18 (He et al. 2016): 11,689,512 parameters, 9,600 numbers of state.

    A 7 x 7 convolution with stride 2 and a 3 x 3 max pooling with stride 2, then four stages of
    two basic blocks (64, 128, 256, 512 channels; every stage after the first starts with
    stride 2 and a 1 x 1 projection shortcut), global average pooling and one dense layer.
    Every convolution is followed by BatchNorm and has no bias.

    Example:
        >>> param_count(param_shapes(resnet18(), (-1, 224, 224, 3))[1])
        11689512

    Introduced in chapter 07, notebooks/07-going-deeper.ipynb.
    """

    def conv_bn(c, k, stride=1):
        return [Conv(c, k, stride=stride, padding=k // 2, use_bias=False), BatchNorm()]

    layers = [*conv_bn(64, 7, 2), Relu(), MaxPool(3, 2, padding=1)]  # (N, 56, 56, 64)
    width = 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for b in range(2):
            stride = 2 if stage > 0 and b == 0 else 1
            inner = serial(*conv_bn(c, 3, stride), Relu(), *conv_bn(c, 3))
            shortcut = None if (stride, width) == (1, c) else serial(*conv_bn(c, 1, stride))
            layers += [Residual(inner, shortcut), Relu()]
            width = c
    return serial(*layers, GlobalAvgPool(), Dense(num_classes, w_init="lecun"))
