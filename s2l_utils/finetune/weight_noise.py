"""Weight noise: the zero-knowledge "shake" with no data at all. Every UNet weight tensor gets Gaussian noise
with standard deviation ``weight_noise_scale`` times that tensor's own standard deviation.

Nothing is trained. The noise is a pure function of (seed, parameter name), so the artefact is just the recipe
(scale, seed) and applying it to the base model reproduces the perturbed model exactly.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from .base import Part


@torch.no_grad()
def perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    for name, parameter in module.named_parameters():
        if parameter.numel() < 2:
            continue
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        noise = torch.randn(parameter.shape, generator=generator).to(parameter.device, parameter.dtype)
        parameter.add_(noise * scale * parameter.float().std().to(parameter.dtype))


class WeightNoise(Part):
    kind = "weight_noise"
    trains = False

    def prepare(self, pipe, params, domain):
        self.scale, self.seed = params.weight_noise_scale, params.seed
        perturb(pipe.unet, self.scale, self.seed)
        return {}

    def trained_parameters(self, pipe) -> int:
        return 0  # every UNet weight moves, but nothing is trained

    def save(self, pipe, folder: Path) -> dict:
        return {"scale": self.scale, "seed": self.seed, "component": "unet"}

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        perturb(pipe.unet, info["scale"], info["seed"])
