"""Hypernetwork (the AUTOMATIC1111 kind): small residual MLPs that transform the attention *context* for K and V.

There is one MLP pair (K, V) per attention *site*: the role (``self`` or ``cross`` attention) and the width of
the context the key and value projections read. The key and value projections see ``mlp(context)`` instead of
``context``. On SD1 the sites are A1111's (keyed by context width alone); at the miniature's widths a self- and a
cross-attention site of equal width keep their own pairs.

It runs as a diffusers attention processor that wraps the stock one and stays outside the UNet's state dict.
The output layer starts at zero, so a fresh hypernetwork leaves the model exactly unchanged. Saved as
safetensors (keys ``k.cross_768.net.0.weight`` …) with its format version, sites and structure in the metadata.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .base import Part

WEIGHTS = "hypernetwork.safetensors"
# the saved file's layout version, in its metadata (none: 1): bump it whenever the saved keys change meaning
FORMAT_VERSION = 2


class HypernetworkMLP(nn.Module):
    """x + MLP(x), widths ``structure`` x d (e.g. [1, 2, 1]); ReLU between layers; zero-initialised output."""

    def __init__(self, width: int, structure: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(structure)):
            layers.append(nn.Linear(width * a, width * b))
            if i < len(structure) - 2:
                layers.append(nn.ReLU())
        for layer in layers[:-1]:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def site_key(role: str, width: int) -> str:
    return f"{role}_{width}"


def attention_site(attn: Attention) -> tuple[str, int]:
    """(role, context width) of an attention layer: what selects its MLP pair."""
    return ("cross" if attn.is_cross_attention else "self"), attn.to_k.in_features


def attention_sites(unet) -> list[tuple[str, int]]:
    return sorted({attention_site(m) for m in unet.modules() if isinstance(m, Attention)})


class Hypernetwork(nn.Module):
    """One (K, V) pair of MLPs per attention site (role, width)."""

    def __init__(self, sites: list[tuple[str, int]], structure: list[int]):
        super().__init__()
        self.sites, self.structure = sorted((role, int(width)) for role, width in sites), list(structure)
        self.k = nn.ModuleDict({site_key(*s): HypernetworkMLP(s[1], structure) for s in self.sites})
        self.v = nn.ModuleDict({site_key(*s): HypernetworkMLP(s[1], structure) for s in self.sites})


class _ShakenAttention:
    """Stands in for an ``Attention`` module, passing everything through except ``to_k``/``to_v``."""

    def __init__(self, attn: Attention, key_mlp: nn.Module, value_mlp: nn.Module):
        self._attn = attn
        self.to_k = lambda context: attn.to_k(key_mlp(context))
        self.to_v = lambda context: attn.to_v(value_mlp(context))

    def __getattr__(self, name):
        return getattr(self._attn, name)


class HypernetworkAttnProcessor:
    """The stock SDPA processor, with the hypernetwork's pair for the layer's site applied to the K and V context."""

    def __init__(self, hypernetwork: Hypernetwork, strength: float = 1.0):
        self.hypernetwork = hypernetwork  # a plain attribute: a processor is no nn.Module, so no state-dict keys
        self.strength = strength
        self.base = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        key = site_key(*attention_site(attn))
        if self.strength and key in self.hypernetwork.k:
            k_mlp, v_mlp = self.hypernetwork.k[key], self.hypernetwork.v[key]
            if self.strength != 1.0:
                s = self.strength
                k_mlp = (lambda m: lambda x: x + s * (m(x) - x))(k_mlp)
                v_mlp = (lambda m: lambda x: x + s * (m(x) - x))(v_mlp)
            attn = _ShakenAttention(attn, k_mlp, v_mlp)
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def attach(pipe, hypernetwork: Hypernetwork, strength: float = 1.0) -> None:
    """Route every attention layer of the UNet through the hypernetwork (``strength`` 0 = the base model)."""
    hypernetwork.to(pipe.unet.device)
    pipe.unet.set_attn_processor(HypernetworkAttnProcessor(hypernetwork, strength))


def detach(pipe) -> None:
    pipe.unet.set_attn_processor(AttnProcessor2_0())


class HypernetworkPart(Part):
    kind = "hypernetwork"

    def prepare(self, pipe, params, domain):
        self.hypernetwork = Hypernetwork(attention_sites(pipe.unet), params.hn_layer_structure)
        self.hypernetwork.requires_grad_(True)
        attach(pipe, self.hypernetwork)
        return {"hypernetwork": self.hypernetwork}

    def trained_parameters(self, pipe) -> int:
        return sum(p.numel() for p in self.hypernetwork.parameters())

    def save(self, pipe, folder: Path) -> dict:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.hypernetwork.state_dict().items()}
        meta = {"format_version": str(FORMAT_VERSION), "sites": json.dumps(self.hypernetwork.sites),
                "structure": json.dumps(self.hypernetwork.structure), "activation": "relu"}
        save_file(tensors, folder / WEIGHTS, metadata=meta)
        return {"weight_name": WEIGHTS}

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        attach(pipe, load_hypernetwork(folder / info["weight_name"]).to(pipe.unet.dtype))


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    """Rebuild a saved hypernetwork from its safetensors file (sites and structure read from the metadata)."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        names = handle.keys()  # a safe_open handle is not iterable
        tensors = {k: handle.get_tensor(k) for k in names}
    version = int(meta.get("format_version", 1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} is a hypernetwork of format {version} (format 1 shared one MLP pair between self- "
                         f"and cross-attention of equal width); this code reads format {FORMAT_VERSION}: "
                         "fine-tune it again")
    hypernetwork = Hypernetwork([tuple(site) for site in json.loads(meta["sites"])], json.loads(meta["structure"]))
    hypernetwork.load_state_dict(tensors)
    return hypernetwork
