"""Pretraining of the miniature target on the world's pre-training set, cached by its parameters.

Trained once per parameter set into ``runs/cache/targets/<key>/`` (checkpoints while it trains, so an interrupted
run resumes; then the pipeline folder); with ``base_model`` set, the named pipeline is the target. Also the
target's identity in cache keys (``target_key``, ``target_identity``) and its ε-MSE by caption (``caption_errors``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths
from .attacks.mia import loss_scores
from .config import ConfigError, Params
from .models import UNCONDITIONAL_PROMPT, DiffusionModel, build_miniature, load_pipeline
from .training import TrainSpec, train
from .world import WORLD_VERSION, ImageFolderData, domain_prompt

# the parameters that change the trained weights (not nonmember_shift: the target never sees a non-member)
TARGET_PARAMS = ("world_seed", "image_size", "private_domains", "members_per_domain", "nonmembers_per_domain",
                 "public_domains", "images_per_public_domain", "name_only_captions", "varied_captions", "data_dir",
                 "domains_file", "unet_channels", "text_width", "seed", "pretrain_steps", "pretrain_batch_size",
                 "pretrain_lr", "caption_dropout")
# parameters that enter the key only away from their neutral value, so a target without them keeps its key
TARGET_KNOBS = {"member_duplicates": []}
# bump when pretraining's output changes for unchanged parameters, so that no stale cached target is reused
TARGET_VERSION = 2
PIPELINE = "pipeline"
HISTORY = "history.csv"


def target_parameters(params: Params) -> dict:
    """The values of every parameter that changes the target's weights (``TARGET_KNOBS`` only when set)."""
    values = params.to_dict()
    knobs = [name for name, neutral in TARGET_KNOBS.items() if values[name] != neutral]
    return {name: values[name] for name in (*TARGET_PARAMS, *knobs)}


def target_key(params: Params) -> str:
    """The miniature target's identity: its code version, the world's, and every parameter that changes its weights."""
    return f"v{TARGET_VERSION}-w{WORLD_VERSION}-{params.digest(*target_parameters(params))}"


def target_dir(params: Params) -> Path:
    return paths.cache_dir("targets") / target_key(params)


def target_source(params: Params, target=None) -> str:
    """Where ``target`` (a pipeline, or already its folder or hub id) is loaded from: the model fine-tuning copies.
    Without a target, or for a pipeline built in memory (just pretrained), the profile's target: ``base_model``
    or the cached miniature's folder."""
    source = target if isinstance(target, (str, Path)) else getattr(target, "name_or_path", None)
    return str(source or params.base_model or target_dir(params) / PIPELINE)


def target_identity(params: Params, target=None) -> str:
    """The identity of ``target`` (see ``target_source``) in cache keys, the same on every machine: a cached
    miniature's folder name (``target_key``: its parameters and code version), else its source as given
    (``base_model``, a hub id or folder)."""
    source = target_source(params, target)
    cached, path = paths.cache_dir("targets").resolve(), Path(source).resolve()
    return path.relative_to(cached).parts[0] if path.is_relative_to(cached) else source


def train_spec(params: Params) -> TrainSpec:
    return TrainSpec(steps=params.pretrain_steps, batch_size=params.pretrain_batch_size, lr=params.pretrain_lr,
                     seed=params.seed, checkpoint_every=params.checkpoint_every,
                     caption_dropout=params.caption_dropout)


def pretrain_target(params: Params, data: ImageFolderData, device: str = "cpu", progress: bool = True,
                    stop_after: int | None = None):
    """Train (or resume, or load from cache) the miniature target; returns (pipeline, loss history).

    ``stop_after`` interrupts training at that step, leaving a checkpoint to resume from (used by tests).
    """
    if params.base_model:
        raise ConfigError(f"base_model is set ({params.base_model!r}): a real model is the target, "
                          "nothing to pretrain; use load_target")
    if params.pretrain_steps <= 0:
        raise ConfigError("pretrain_steps must be > 0 to pretrain the miniature target")
    folder = target_dir(params)
    if (folder / PIPELINE / "model_index.json").is_file():
        return load_pipeline(folder / PIPELINE, device), pd.read_csv(folder / HISTORY)

    rows = data.pretraining_samples()
    images = data.load_images(rows, params.image_size)
    pipe = build_miniature(params, data.meta["text"]).to(device)
    model = DiffusionModel(pipe)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(target_parameters(params), indent=1))
    losses = train(model, {"unet": pipe.unet, "text_encoder": pipe.text_encoder}, images, list(rows["text"]),
                   train_spec(params), checkpoint_dir=folder / "checkpoints", stop_after=stop_after,
                   progress=progress, description="pretraining target")
    history = pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses})
    if len(losses) < params.pretrain_steps:
        return pipe, history
    tmp = folder / f".{PIPELINE}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    history.to_csv(folder / HISTORY, index=False)
    os.replace(tmp, folder / PIPELINE)
    pipe.register_to_config(_name_or_path=str(folder / PIPELINE))  # as if loaded: keys name the cached target
    return pipe, history


def load_target(params: Params, device: str = "auto"):
    """The profile's target: ``base_model`` if set, else the cached miniature (pretrained by notebook 01)."""
    if params.base_model:
        return load_pipeline(params.base_model, device)
    folder = target_dir(params) / PIPELINE
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"no pretrained target for these parameters at {folder}: run notebook "
                                "01_pretrain_target with the same profile first")
    return load_pipeline(folder, device)


def caption_errors(model: DiffusionModel, images, captions: list[str], domains: list[str], timesteps: int = 10,
                   noise_draws: int = 2, seed: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """Mean ε-MSE of ``images`` under four conditionings, on the same seeded timesteps and noises.

    own: each image's caption; empty: the unconditional prompt (the branch classifier-free guidance pushes
    away from); shuffled: another image's caption (a seeded derangement, mostly other identities); name: the
    bare attack prompt "photo of <Name>". Guidance is sound when ``empty`` is learned (close to ``own``, far
    below ``shuffled``) and the name prompt is one the model was trained on. ``vs_own`` is each error / own's.
    """
    n = len(captions)
    if n < 2 or len(images) != n or len(domains) != n:
        raise ValueError(f"need >= 2 images with one caption and domain each; got {len(images)} images, "
                         f"{n} captions, {len(domains)} domains")
    order = np.random.default_rng(seed).permutation(n)
    successor = np.empty(n, dtype=int)
    successor[order] = np.roll(order, -1)  # one cycle through a random order: no image keeps its own caption
    shuffled = [captions[j] for j in successor]
    conditions = {"own": list(captions), "empty": [UNCONDITIONAL_PROMPT] * n, "shuffled": shuffled,
                  "name": [domain_prompt(d) for d in domains]}
    errors = {name: -loss_scores(model, images, texts, timesteps=timesteps, noise_draws=noise_draws, seed=seed,
                                 batch_size=batch_size).mean() for name, texts in conditions.items()}
    table = pd.DataFrame({"condition": list(errors), "eps_mse": list(errors.values())})
    table["vs_own"] = table["eps_mse"] / errors["own"]
    return table
