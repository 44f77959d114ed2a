"""Synthetic private (SP) sets: what the attacker fine-tunes on, at four levels of prior knowledge.

* ``noise``: no knowledge of the domain's appearance. Pure Gaussian-noise images (clipped to the image
  range) captioned with the domain prompt: the paper's zero-knowledge "shake".
* ``class``: only the class. The target generates from a generic prompt ("photo of a person"), captioned so.
* ``name``: the domain's name (the paper's default). The target generates from "photo of <Name>".
* ``captions``: the real captions of the domain's pre-training members, but not their images. The target
  generates one image per caption (cycled to the set size), each captioned with its prompt.

An SP set is cached by everything that determines it (the target that generated it, the data its prompts come
from, domain, level, size, sampler, steps, guidance, seed, and ``SP_VERSION``) under ``runs/cache/sp/<hash>/``
in the imagefolder layout, each image with its prompt.
"""

from __future__ import annotations

import pandas as pd
import torch

from . import paths, pretrain
from .config import ConfigError, Params
from .sampling import generate, noise_seed
from .world import ImageFolderData, data_identity, domain_prompt, to_pil, unshifted, write_imagefolder

LEVELS = ("noise", "class", "name", "captions")
SP_PARAMS = ("sp_level", "sp_size", "sp_sampler", "sp_steps", "sp_guidance", "class_prompt", "seed")
# The code version of SP sets, in their key: bump it whenever an SP set holds other images or prompts for
# unchanged parameters.
SP_VERSION = 2


def resolve_domain(params: Params, data: ImageFolderData) -> str:
    """The attacked domain: ``target_domain`` or, when empty, the first private domain."""
    if not data.private_domains:
        raise ConfigError("the data has no private domain (no domain with non-member images)")
    domain = params.target_domain or data.private_domains[0]
    if domain not in data.private_domains:
        raise ConfigError(f"unknown target_domain {domain!r}. Private domains: {', '.join(data.private_domains)}")
    return domain


def sp_prompts(data: ImageFolderData, domain: str, level: str, size: int, class_prompt: str) -> list[str]:
    """The prompt of each SP image (also its caption for fine-tuning)."""
    if level not in LEVELS:
        raise ConfigError(f"unknown prior-knowledge level {level!r}; use one of {', '.join(LEVELS)}")
    if level == "class":
        return [class_prompt] * size
    if level == "captions":
        captions = list(data.split(domain, "member")["text"])
        return [captions[i % len(captions)] for i in range(size)]
    return [domain_prompt(domain)] * size


def noise_images(count: int, size: int, seed: int) -> torch.Tensor:
    """Standard Gaussian images clipped to [-1, 1]; image ``i`` depends only on (seed, i), from the ``sp_noise``
    stream (never the loss attack's noise)."""
    generators = [torch.Generator().manual_seed(noise_seed("sp_noise", seed, i)) for i in range(count)]
    return torch.stack([torch.randn((3, size, size), generator=g) for g in generators]).clamp(-1, 1)


def synthesize(pipe, data: ImageFolderData, domain: str, params: Params, progress: bool = True):
    """Generate the SP set of ``domain``: (images in [-1, 1], metadata table with each image's prompt)."""
    prompts = sp_prompts(data, domain, params.sp_level, params.sp_size, params.class_prompt)
    if params.sp_level == "noise":
        size = pipe.unet.config.sample_size * getattr(pipe, "vae_scale_factor", 1)
        images = noise_images(params.sp_size, size, params.seed)
    else:
        images = generate(pipe, prompts, "sp", seed=params.seed, steps=params.sp_steps,
                          guidance_scale=params.sp_guidance, sampler=params.sp_sampler, progress=progress)
    slug = domain.lower().replace(" ", "_")
    meta = pd.DataFrame({"file_name": [f"{slug}/sp_{i:05d}.png" for i in range(len(images))], "text": prompts,
                         "domain": domain, "split": "member", "private": False, "level": params.sp_level})
    return images, meta


def sp_key(params: Params, domain: str, target: str) -> str:
    """The SP set's cache key: ``target`` (the ``target_identity`` of the target that generates it), the data its
    prompts come from (``data_identity``; a non-member shift changes no prompt, so a shifted world shares its
    twin's SP sets), the domain, the SP parameters and ``SP_VERSION``."""
    return params.digest(*SP_PARAMS, target=target, data=data_identity(unshifted(params)), domain=domain,
                         sp_version=SP_VERSION)


def ensure_sp_set(params: Params, data: ImageFolderData, pipe, domain: str | None = None,
                  progress: bool = True) -> ImageFolderData:
    """The SP set for these parameters: generated with ``pipe`` (the target) once, then read from the cache."""
    domain = domain or resolve_domain(params, data)
    folder = paths.cache_dir("sp") / sp_key(params, domain, pretrain.target_identity(params, pipe))
    with paths.cache_lock(folder):
        if not (folder / "metadata.jsonl").is_file():
            images, meta = synthesize(pipe, data, domain, params, progress)
            write_imagefolder(folder, to_pil(images), meta)
    return ImageFolderData(folder)
