"""Membership-inference scores for diffusion models (higher = more likely a training member)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..models import DiffusionModel
from ..sampling import noise_seed
from ..world import ImageFolderData


def timestep_grid(num_train_timesteps: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced timesteps at the centres of equal bins of [0, T)."""
    return ((torch.arange(count) + 0.5) * num_train_timesteps / count).long()


def _batches(model: DiffusionModel, images: torch.Tensor, captions: list[str], batch_size: int):
    """(start, x0, text) per batch: images encoded (VAE mean for latent models) and captions embedded."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        raise ValueError("no images to score")
    for start in range(0, len(images), batch_size):
        yield (start, model.encode(images[start:start + batch_size]),
               model.encode_text(captions[start:start + batch_size]))


@torch.no_grad()
def loss_scores(model: DiffusionModel, images: torch.Tensor, captions: list[str], timesteps: int = 10,
                noise_draws: int = 2, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Loss attack: minus the mean ε-prediction error over a fixed timestep grid and seeded noises.

    The noise for image ``i`` depends only on (``seed``, ``i``), so two models (before / after fine-tuning)
    are scored on exactly the same noisy inputs, whatever the batch size.
    """
    grid = timestep_grid(model.num_train_timesteps, timesteps)
    scores = []
    for start, x0, text in _batches(model, images, captions, batch_size):
        noises = torch.stack([
            torch.randn((len(grid) * noise_draws, *x0.shape[1:]),
                        generator=torch.Generator().manual_seed(noise_seed("attack", seed, start + i)))
            for i in range(len(x0))]).to(x0.device, x0.dtype)  # (B, K*D, C, H, W)
        # every (image, timestep, draw) is one row; rows go through the UNet in batches of batch_size, so few
        # images with many timesteps still fill the batch
        steps = grid.repeat_interleave(noise_draws).to(x0.device)
        b, k = noises.shape[:2]
        rows_x0, rows_text = x0.repeat_interleave(k, 0), text.repeat_interleave(k, 0)
        rows_noise, rows_t = noises.flatten(0, 1), steps.repeat(b)
        row_errors = []
        for r in range(0, b * k, batch_size):
            sl = slice(r, r + batch_size)
            noisy = model.add_noise(rows_x0[sl], rows_noise[sl], rows_t[sl])
            pred = model.predict_noise(noisy, rows_t[sl], rows_text[sl])
            row_errors.append((pred.float() - rows_noise[sl].float()).pow(2).flatten(1).mean(1))
        errors = torch.cat(row_errors).view(b, k).sum(1)
        scores.append(-(errors / (len(grid) * noise_draws)).cpu())
    return torch.cat(scores).numpy()


def ddim_move(model: DiffusionModel, x: torch.Tensor, t_from: int, t_to: int, eps: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM move from timestep ``t_from`` to ``t_to`` (either direction) given ε at ``t_from``."""
    a = model.alphas_cumprod.to(x.device)
    x0_pred = (x - (1 - a[t_from]).sqrt() * eps) / a[t_from].sqrt()
    return a[t_to].sqrt() * x0_pred + (1 - a[t_to]).sqrt() * eps


def _eps(model: DiffusionModel, x: torch.Tensor, t: int, text: torch.Tensor) -> torch.Tensor:
    return model.predict_noise(x, torch.full((len(x),), t, dtype=torch.long, device=x.device), text)


def ddim_invert(model: DiffusionModel, x0: torch.Tensor, text: torch.Tensor, t_end: int, k: int) -> dict:
    """Deterministic DDIM inversion 0 -> k -> ... -> ``t_end`` (ε at each step's source); every point by timestep."""
    if t_end % k:
        raise ValueError(f"t_end {t_end} must be a multiple of the stride k={k}")
    points, x = {0: x0}, x0
    for t in range(0, t_end, k):
        x = ddim_move(model, x, t, t + k, _eps(model, x, t, text))
        points[t + k] = x
    return points


SECMI_VARIANTS = ("paper", "ldm")


@torch.no_grad()
def secmi_scores(model: DiffusionModel, images: torch.Tensor, captions: list[str], t_sec: int = 100, k: int = 10,
                 variant: str = "paper", batch_size: int = 64) -> np.ndarray:
    """SecMI-stat: minus the t-error at ``t_sec`` (conditioned on each caption, no guidance).

    * ``paper``: as the paper writes the t-error: invert x0 to x̃_t (t = t_sec), one deterministic step down
      to t−k, one back up to t, and compare with x̃_t: ‖φ(ψ(x̃_t, t), t−k) − x̃_t‖².
    * ``ldm``: the order of the LDM code released with S2L: invert to t_sec + k, one step down to t_sec, and
      compare with the inverted x̃ at t_sec: ‖ψ(x̃_{t+k}, t+k) − x̃_t‖². (Reading the paper as "one step up,
      then down" gives exactly this, because the step up from x̃_t *is* the inversion's next step.)
    """
    if variant not in SECMI_VARIANTS:
        raise ValueError(f"unknown SecMI variant {variant!r}; use one of {', '.join(SECMI_VARIANTS)}")
    if not 0 < k <= t_sec or t_sec + k >= model.num_train_timesteps:
        raise ValueError(f"need 0 < k <= t_sec and t_sec + k < {model.num_train_timesteps}; got t_sec={t_sec}, k={k}")
    scores = []
    for _, x0, text in _batches(model, images, captions, batch_size):
        if variant == "paper":
            x_t = ddim_invert(model, x0, text, t_sec, k)[t_sec]
            x_down = ddim_move(model, x_t, t_sec, t_sec - k, _eps(model, x_t, t_sec, text))
            x_back = ddim_move(model, x_down, t_sec - k, t_sec, _eps(model, x_down, t_sec - k, text))
        else:
            points = ddim_invert(model, x0, text, t_sec + k, k)
            x_t, x_up = points[t_sec], points[t_sec + k]
            x_back = ddim_move(model, x_up, t_sec + k, t_sec, _eps(model, x_up, t_sec + k, text))
        scores.append(-(x_back.float() - x_t.float()).pow(2).flatten(1).sum(1).cpu())
    return torch.cat(scores).numpy()


@torch.no_grad()
def pia_scores(model: DiffusionModel, images: torch.Tensor, captions: list[str], t: int = 200,
               normalize: bool = False, p: int = 4, batch_size: int = 64) -> np.ndarray:
    """PIA (PIAN with ``normalize``): ε0 = ε(x0, 0) is taken as the noise, one jump to x_t = √ā x0 + √(1−ā) ε0,
    and the score is minus Σ|ε(x_t, t) − ε0|^p. ``t`` is fixed beforehand, never picked on the test set."""
    if not 0 < t < model.num_train_timesteps:
        raise ValueError(f"PIA timestep must be in (0, {model.num_train_timesteps}), got {t}")
    a = model.alphas_cumprod
    scores = []
    for _, x0, text in _batches(model, images, captions, batch_size):
        eps0 = _eps(model, x0, 0, text)
        if normalize:
            eps0 = eps0 / eps0.abs().mean(dim=tuple(range(1, eps0.ndim)), keepdim=True) * (2 / np.pi) ** 0.5
        x_t = a[t].sqrt().to(x0.device) * x0 + (1 - a[t]).sqrt().to(x0.device) * eps0
        scores.append(-(_eps(model, x_t, t, text) - eps0).float().abs().pow(p).flatten(1).sum(1).cpu())
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
