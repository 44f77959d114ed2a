"""Membership-inference scores for diffusion models (higher = more likely a training member)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models import DiffusionModel
from ..world import ImageFolderData


def timestep_grid(num_train_timesteps: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced timesteps at the centres of equal bins of [0, T)."""
    return ((torch.arange(count) + 0.5) * num_train_timesteps / count).long()


@torch.no_grad()
def loss_scores(model: DiffusionModel, images: torch.Tensor, captions: list[str], timesteps: int = 10,
                noise_draws: int = 2, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Loss attack: minus the mean ε-prediction error over a fixed timestep grid and seeded noises.

    The noise for image ``i`` depends only on (``seed``, ``i``), so two models (before / after fine-tuning)
    are scored on exactly the same noisy inputs, whatever the batch size.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    grid = timestep_grid(model.num_train_timesteps, timesteps)
    scores = []
    for start in range(0, len(images), batch_size):
        x0 = model.encode(images[start:start + batch_size])
        text = model.encode_text(captions[start:start + batch_size])
        noises = torch.stack([
            torch.randn((len(grid) * noise_draws, *x0.shape[1:]),
                        generator=torch.Generator().manual_seed(seed * 1_000_003 + start + i))
            for i in range(len(x0))]).to(x0.device, x0.dtype)  # (B, K*D, C, H, W)
        errors = torch.zeros(len(x0), device=x0.device)
        for k, t in enumerate(grid.repeat_interleave(noise_draws)):
            noise = noises[:, k]
            tt = t.repeat(len(x0))
            pred = model.predict_noise(model.add_noise(x0, noise, tt), tt.to(x0.device), text)
            errors += (pred.float() - noise.float()).pow(2).flatten(1).mean(1)
        scores.append(-(errors / (len(grid) * noise_draws)).cpu())
    return torch.cat(scores).numpy()


def score_domains(score_fn, model: DiffusionModel, data: ImageFolderData, domains: list[str] | None = None,
                  progress: bool = True, rewrite=None, **kwargs) -> pd.DataFrame:
    """Score every member and non-member image of each private domain with ``score_fn``.

    ``rewrite`` maps the captions to how the model knows the domain (``Finetuned.rewrite`` for textual
    inversion). Returns a tidy table: domain, file_name, is_member, score (higher = more likely member).
    """
    domains = data.private_domains if domains is None else domains
    if not domains:
        raise ValueError("no private domains to attack (the data has no non-member images)")
    tables = []
    for domain in tqdm(domains, desc="scoring domains", disable=not progress):
        for split in ("member", "nonmember"):
            rows = data.split(domain, split)
            if rows.empty:
                raise ValueError(f"domain {domain!r} has no {split} images")
            captions = rewrite(list(rows["text"])) if rewrite else list(rows["text"])
            scores = score_fn(model, data.load_images(rows, model.image_size), captions, **kwargs)
            tables.append(pd.DataFrame({"domain": domain, "file_name": rows["file_name"],
                                        "is_member": split == "member", "score": scores}))
    return pd.concat(tables, ignore_index=True)
