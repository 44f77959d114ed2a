"""Full fine-tuning of whole components (the parameterisation of DreamBooth and End2End)."""

from __future__ import annotations

from pathlib import Path

from .base import Part, trainable_fp32


class FullWeights(Part):
    """Train every weight of the named pipeline components; saved as diffusers component folders."""

    kind = "full_weights"

    def __init__(self, components: tuple[str, ...]):
        self.components = components

    def prepare(self, pipe, params, domain):
        modules = {}
        for name in self.components:
            module = getattr(pipe, name, None)
            if module is None:
                continue  # e.g. no VAE in a pixel-space model
            module.requires_grad_(True)
            trainable_fp32(module)
            modules[name] = module
        return modules

    def trained_parameters(self, pipe) -> int:
        return sum(p.numel() for name in self.components if getattr(pipe, name, None) is not None
                   for p in getattr(pipe, name).parameters())

    def save(self, pipe, folder: Path) -> dict:
        saved = [name for name in self.components if getattr(pipe, name, None) is not None]
        for name in saved:
            getattr(pipe, name).save_pretrained(folder / name)
        return {"components": saved}

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        for name in info["components"]:
            current = getattr(pipe, name)
            loaded = type(current).from_pretrained(folder / name, dtype=current.dtype)
            setattr(pipe, name, loaded.to(current.device))
