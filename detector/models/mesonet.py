"""MesoNet-4 and MesoInception-4 (Afchar et al., WIFS 2018), in PyTorch.

Layer for layer the Keras models of the public release, so its trained weights load
exactly (see :mod:`detector.convert_mesonet`). Input 256x256 RGB in [0, 1]. The
Keras models output P(real); these modules return the *fake* logit (its negation).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import DataConfig, register_model

KERAS_BN_EPS = 1e-3
MESO_DATA = DataConfig(256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=KERAS_BN_EPS)


class Inception(nn.Module):
    def __init__(self, cin: int, a: int, b: int, c: int, d: int):
        super().__init__()
        # Creation order = Keras layer order: x1, x2 (1x1, 3x3), x3 (1x1, 3x3 d2), x4 (1x1, 3x3 d3)
        self.b1 = nn.Conv2d(cin, a, 1)
        self.b2a = nn.Conv2d(cin, b, 1)
        self.b2b = nn.Conv2d(b, b, 3, padding=1)
        self.b3a = nn.Conv2d(cin, c, 1)
        self.b3b = nn.Conv2d(c, c, 3, padding=2, dilation=2)
        self.b4a = nn.Conv2d(cin, d, 1)
        self.b4b = nn.Conv2d(d, d, 3, padding=3, dilation=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu
        return torch.cat([
            r(self.b1(x)),
            r(self.b2b(r(self.b2a(x)))),
            r(self.b3b(r(self.b3a(x)))),
            r(self.b4b(r(self.b4a(x)))),
        ], dim=1)


class _MesoHead(nn.Module):
    """Flatten (channels-last, as Keras) -> Dropout -> Dense16 -> LeakyReLU(0.1) -> Dropout -> Dense1."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8 * 8 * 16, 16)
        self.fc2 = nn.Linear(16, 1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1).flatten(1)
        x = self.drop(x)
        x = F.leaky_relu(self.fc1(x), 0.1)
        x = self.drop(x)
        real_logit = self.fc2(x).squeeze(1)
        return -real_logit  # fake logit


class Meso4(nn.Module):
    data_config = MESO_DATA

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 5, padding=2), _bn(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 16, 5, padding=2), _bn(16)
        self.conv4, self.bn4 = nn.Conv2d(16, 16, 5, padding=2), _bn(16)
        self.head = _MesoHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv2(x))), 2)
        x = F.max_pool2d(self.bn3(F.relu(self.conv3(x))), 2)
        x = F.max_pool2d(self.bn4(F.relu(self.conv4(x))), 4)
        return self.head(x)


class MesoInception4(nn.Module):
    data_config = MESO_DATA

    def __init__(self):
        super().__init__()
        self.inc1 = Inception(3, 1, 4, 4, 2)
        self.bn1 = _bn(11)
        self.inc2 = Inception(11, 2, 4, 4, 2)
        self.bn2 = _bn(12)
        self.conv3, self.bn3 = nn.Conv2d(12, 16, 5, padding=2), _bn(16)
        self.conv4, self.bn4 = nn.Conv2d(16, 16, 5, padding=2), _bn(16)
        self.head = _MesoHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.bn1(self.inc1(x)), 2)
        x = F.max_pool2d(self.bn2(self.inc2(x)), 2)
        x = F.max_pool2d(self.bn3(F.relu(self.conv3(x))), 2)
        x = F.max_pool2d(self.bn4(F.relu(self.conv4(x))), 4)
        return self.head(x)


@register_model
def mesonet4(**kwargs) -> nn.Module:
    return Meso4(**kwargs)


@register_model
def mesoinception4(**kwargs) -> nn.Module:
    return MesoInception4(**kwargs)
