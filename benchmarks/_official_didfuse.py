"""DIDFuse as the official repository's model code builds it, for side-by-side timing only.

Written from MODELS.md section 2 (layer table and key layout of the official checkpoint), not copied:
``nn.Sequential`` blocks ``cov1``..``cov7`` of [ReflectionPad2d] -> Conv2d 3x3 -> BatchNorm2d -> PReLU /
Tanh / Sigmoid, the encoder run once per image, the summation rule, then the decoder on the
concatenations ``[B, D]``, ``[conv5, F2]``, ``[conv6, F1]``; contiguous (NCHW) float32, unfused
BatchNorm. Its state-dict keys are the official ones, so ``shared/reference/didfuse_official.safetensors``
loads with ``strict=True``. Never imported by the package.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class _Block(nn.Module):
    """One official layer: a module ``cov<n>`` holding the ``nn.Sequential`` ``cov<n>`` (hence the
    checkpoint keys ``cov<n>.cov<n>.<i>.<param>``)."""

    def __init__(self, n: int, cin: int, cout: int, act: nn.Module, reflect: bool) -> None:
        super().__init__()
        layers = [nn.ReflectionPad2d(1)] if reflect else []
        layers += [nn.Conv2d(cin, cout, 3, padding=0 if reflect else 1), nn.BatchNorm2d(cout), act]
        setattr(self, f"cov{n}", nn.Sequential(*layers))
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"cov{self.n}")(x)


class OfficialEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cov1 = _Block(1, 1, 64, nn.PReLU(), reflect=True)
        self.cov2 = _Block(2, 64, 64, nn.PReLU(), reflect=False)
        self.cov3 = _Block(3, 64, 64, nn.Tanh(), reflect=False)
        self.cov4 = _Block(4, 64, 64, nn.Tanh(), reflect=False)

    def forward(self, x: torch.Tensor):
        x1 = self.cov1(x)
        x2 = self.cov2(x1)
        return x1, x2, self.cov3(x2), self.cov4(x2)


class OfficialDecoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cov5 = _Block(5, 128, 64, nn.PReLU(), reflect=False)
        self.cov6 = _Block(6, 128, 64, nn.PReLU(), reflect=False)
        self.cov7 = _Block(7, 128, 1, nn.Sigmoid(), reflect=True)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        x = self.cov5(torch.cat([b, d], dim=1))
        x = self.cov6(torch.cat([x, f2], dim=1))
        return self.cov7(torch.cat([x, f1], dim=1))


class OfficialDIDFuse(nn.Module):
    """``forward(ir, vis)`` -> fused ``(N,1,H,W)`` with the summation rule, as the official test script."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = OfficialEncoder()
        self.decoder = OfficialDecoder()

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        i1, i2, ib, id_ = self.encoder(ir)
        v1, v2, vb, vd = self.encoder(vis)
        return self.decoder(i1 + v1, i2 + v2, ib + vb, id_ + vd)


def load_official(state_dict: Mapping[str, torch.Tensor]) -> OfficialDIDFuse:
    model = OfficialDIDFuse()
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()
