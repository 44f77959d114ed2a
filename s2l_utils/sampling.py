"""Seeded, batched generation shared by previews, SP-set synthesis and extraction, and the torch seed of every
other seeded noise (``noise_seed``): (purpose, seed, index) packed into disjoint bit fields of 32 bits, so two
purposes never share initial noise.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

from .config import MAX_SEED

SAMPLERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpmsolver": DPMSolverMultistepScheduler}
# a purpose's position is its bit-field value: append new ones (up to 8), never reorder
PURPOSES = ("preview", "sp", "extraction", "sp_noise", "attack")
SEED_BITS, INDEX_BITS = (MAX_SEED - 1).bit_length(), 19
assert len(PURPOSES) <= 2 ** (32 - SEED_BITS - INDEX_BITS), "purpose, seed and index must fit in 32 bits"


def noise_seed(purpose: str, seed: int, index: int) -> int:
    """The torch seed of image ``index`` of the ``purpose`` stream with ``seed``: (purpose, seed, index) packed
    into disjoint bit fields, so distinct triples always give distinct seeds."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown generation purpose {purpose!r}; use one of {', '.join(PURPOSES)}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"generation seed must be in [0, {MAX_SEED}), got {seed}")
    if not 0 <= index < 2 ** INDEX_BITS:
        raise ValueError(f"image index must be in [0, {2 ** INDEX_BITS}) (images of one generate call), got {index}")
    return (PURPOSES.index(purpose) << (SEED_BITS + INDEX_BITS)) | (seed << INDEX_BITS) | index


def generate(pipe, prompts: list[str], purpose: str, seed: int, steps: int = 50, guidance_scale: float = 3.0,
             sampler: str | None = None, batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] for ``prompts``; image ``i`` depends only on (purpose, seed, i, prompt).

    Every image has its own generator (seeded by ``noise_seed``), so results do not change with the batch size.
    ``sampler`` swaps the pipeline's scheduler for this call only (``None`` keeps it).
    """
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    seeds = [noise_seed(purpose, seed, i) for i in range(len(prompts))]  # checks every value before any work
    device = pipe.unet.device
    original = pipe.scheduler
    if sampler is not None:
        pipe.scheduler = SAMPLERS[sampler].from_config(original.config)
    out = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not progress):
            chunk = prompts[start:start + batch_size]
            generators = [torch.Generator(device).manual_seed(s) for s in seeds[start:start + batch_size]]
            images = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generators,
                          output_type="pt").images
            out.append(images.float().cpu() * 2 - 1)  # pipelines return [0, 1]
    finally:
        pipe.scheduler = original
    return torch.cat(out) if out else torch.empty(0)
