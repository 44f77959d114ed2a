"""Seeded, batched generation, shared by sample previews, SP-set synthesis and extraction."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm

SAMPLERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "dpmsolver": DPMSolverMultistepScheduler}


def generate(pipe, prompts: list[str], seed: int = 0, steps: int = 50, guidance_scale: float = 3.0,
             sampler: str | None = None, batch_size: int = 32, progress: bool = True) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] for ``prompts``; image ``i`` depends only on (seed, i, prompt).

    Every image has its own generator, so results do not change with the batch size. ``sampler`` swaps the
    pipeline's scheduler for this call only (``None`` keeps it).
    """
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps}")
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    device = pipe.unet.device
    original = pipe.scheduler
    if sampler is not None:
        pipe.scheduler = SAMPLERS[sampler].from_config(original.config)
    out = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not progress):
            chunk = prompts[start:start + batch_size]
            generators = [torch.Generator(device).manual_seed(seed * 1_000_003 + start + i)
                          for i in range(len(chunk))]
            images = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance_scale, generator=generators,
                          output_type="pt").images
            out.append(images.float().cpu() * 2 - 1)  # pipelines return [0, 1]
    finally:
        pipe.scheduler = original
    return torch.cat(out) if out else torch.empty(0)
