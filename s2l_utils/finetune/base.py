"""What every fine-tuning method is made of: *parts* that decide which parameters train and how they are saved.

A part (full weights, LoRA adapters, token embeddings, a hypernetwork, a weight perturbation) knows how to

* ``prepare`` a pipeline: add what it trains and mark it trainable, returning the modules that hold it;
* ``rewrite`` a caption (textual inversion puts its placeholder token where the domain name was);
* ``after_step``: work after each optimiser step (textual inversion restores the other embedding rows);
* ``save`` its artefact into a folder, and ``apply`` that artefact to a fresh base pipeline.

A method is a named list of parts; combinations are lists of several, so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Params


class Part:
    """One kind of trainable change to a pipeline. Subclasses set ``kind`` and override what they need."""

    kind: str = ""
    trains: bool = True  # False: the part changes weights without training (weight_noise)

    def prepare(self, pipe, params: Params, domain: str) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def trained_parameters(self, pipe) -> int:
        """How many parameter values this part actually changes (called after ``prepare``)."""
        raise NotImplementedError

    def rewrite(self, caption: str) -> str:
        return caption

    @classmethod
    def rewrite_saved(cls, caption: str, info: dict) -> str:
        """``rewrite`` for a loaded artefact, from the facts ``save`` returned."""
        return caption

    def after_step(self) -> None:
        pass

    def save(self, pipe, folder: Path) -> dict:
        """Write the artefact into ``folder``; returns the JSON-able facts ``apply`` needs."""
        raise NotImplementedError

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Method:
    """A named fine-tuning method: the parts it is built from, created fresh for each run."""

    name: str
    description: str
    parts: Callable[[Params], list[Part]]
    notebook: str = ""

    def build(self, params: Params) -> list[Part]:
        return self.parts(params)


def trainable_fp32(module: torch.nn.Module) -> None:
    """Trainable weights must be fp32 even when the pipeline was loaded in fp16 (mixed precision trains them)."""
    for parameter in module.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
