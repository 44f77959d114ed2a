"""Textual inversion: a new placeholder token (one or more vectors) whose embedding alone is trained.

The placeholder replaces the domain name in every caption ("photo of <marzanbel-lo>, smiling"). A multi-vector
placeholder is the tokens ``<tok> <tok>_1 …``, but captions carry only ``<tok>``: the text encoding expands it
(``models.expand_placeholders``, the same ``maybe_convert_prompt`` step every diffusers SD pipeline applies),
so training, scoring and generation see the same ids. AdamW updates the whole embedding matrix (weight decay
touches every row), so every other row is restored after each step. Saved as ``learned_embeds.safetensors``
({token: (vectors, width)}), which ``pipe.load_textual_inversion`` reads back as ``<tok> <tok>_1 …``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from .base import Part

WEIGHTS = "learned_embeds.safetensors"


def placeholder_for(domain: str) -> str:
    return "<" + re.sub(r"[^a-z0-9]+", "-", domain.lower()).strip("-") + ">"


def placeholder_tokens(token: str, vectors: int) -> list[str]:
    """The tokenizer entries of a (multi-vector) placeholder, named as diffusers names them: ``<tok> <tok>_1 …``."""
    return [token] + [f"{token}_{i}" for i in range(1, vectors)]


class TextualInversion(Part):
    kind = "textual_inversion"

    def prepare(self, pipe, params, domain):
        tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
        self.domain, self.token, self.vectors = domain, placeholder_for(domain), params.ti_num_vectors
        tokens = placeholder_tokens(self.token, self.vectors)
        if tokenizer.add_tokens(tokens) != len(tokens):
            raise ValueError(f"placeholder {self.token} is already in the tokenizer's vocabulary")
        init_ids = tokenizer.encode(params.ti_initializer, add_special_tokens=False)
        if len(init_ids) != 1:
            raise ValueError(f"ti_initializer {params.ti_initializer!r} must be a single token, got {len(init_ids)}")
        self.ids = tokenizer.convert_tokens_to_ids(tokens)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        embeddings = text_encoder.get_input_embeddings()
        with torch.no_grad():
            embeddings.weight[self.ids] = embeddings.weight[init_ids[0]].clone().float()
        embeddings.weight.requires_grad_(True)  # finetune() froze everything else (and LoRA keeps this trainable)
        if embeddings.weight.dtype != torch.float32:
            embeddings.weight.data = embeddings.weight.data.float()
        self.weight = embeddings.weight
        self.original = embeddings.weight.detach().clone()
        self.keep = torch.ones(len(tokenizer), dtype=torch.bool)
        self.keep[self.ids] = False
        return {"text_encoder": text_encoder}

    def trained_parameters(self, pipe) -> int:
        return len(self.ids) * self.weight.shape[1]  # the optimiser sees every row; all but these are restored

    def rewrite(self, caption: str) -> str:
        return self.rewrite_saved(caption, {"replaces": self.domain, "token": self.token, "vectors": self.vectors})

    @classmethod
    def rewrite_saved(cls, caption: str, info: dict) -> str:
        return caption.replace(info["replaces"], info["token"])  # the text encoding expands a multi-vector token

    def after_step(self) -> None:
        with torch.no_grad():
            self.weight[self.keep] = self.original[self.keep].to(self.weight.device)

    def save(self, pipe, folder: Path) -> dict:
        learned = self.weight.detach()[self.ids].float().cpu().contiguous()
        save_file({self.token: learned}, folder / WEIGHTS)
        return {"weight_name": WEIGHTS, "token": self.token, "vectors": self.vectors, "replaces": self.domain}

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        pipe.load_textual_inversion(str(folder / info["weight_name"]), token=info["token"])
