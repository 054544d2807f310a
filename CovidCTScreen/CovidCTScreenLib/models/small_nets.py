"""The two small networks of the seed papers, trained from scratch (imports torch).

CRNet (seed 003, He et al.): (conv32-bn-relu), maxpool, (conv64-relu), maxpool, (conv128-relu), maxpool,
global average pooling, linear; 7x7 convolutions with stride 1, 3x3 max pooling with stride 2.

SSResNet (seed 001, two-path semi-supervised ResNet): a shared trunk feeds a supervised and an
unsupervised path; each part is one convolution, two residual blocks, batch normalisation and pooling.
The supervised path's output ``z_sup`` is the logits; ``z_unsup`` (same size) only serves the
consistency loss in training. Widths (32 shared, 64 per path) are ours: the seed gives none.
"""

from __future__ import annotations

import torch
from torch import nn


class CRNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 32, 7, padding=3), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 64, 7, padding=3), nn.ReLU(inplace=True))
        self.conv3 = nn.Sequential(nn.Conv2d(64, 128, 7, padding=3), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        x = self.pool(self.conv3(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class ResBlock(nn.Module):
    """x + conv(conv(x)) (seed 001 eq. 3), each convolution 3x3 with batch normalisation."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResPath(nn.Module):
    """One convolution, two residual blocks, batch normalisation, pooling (seed 001 Table II); with
    ``num_classes`` a global pooling and a linear layer give the path's output vector z."""

    def __init__(self, cin: int, cout: int, kernel: int, num_classes: int | None = None):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2, bias=False),
                                  nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(ResBlock(cout), ResBlock(cout), nn.BatchNorm2d(cout))
        self.pool = nn.MaxPool2d(2) if num_classes is None else nn.AdaptiveAvgPool2d(1)
        self.fc = None if num_classes is None else nn.Linear(cout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.conv(x)))
        return x if self.fc is None else self.fc(torch.flatten(x, 1))


class SSResNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1):
        super().__init__()
        self.shared = ResPath(in_channels, 32, 7)
        self.sup = ResPath(32, 64, 3, num_classes)
        self.unsup = ResPath(32, 64, 3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sup(self.shared(x))

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_sup, z_unsup) of the two paths on the shared trunk's features."""
        z = self.shared(x)
        return self.sup(z), self.unsup(z)
