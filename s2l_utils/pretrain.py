"""Pretraining of the miniature target on the world's pre-training set, cached by its parameters.

The target is trained once per parameter set into ``runs/cache/targets/<hash>/``: checkpoints while it
trains (an interrupted run resumes), then the final diffusers pipeline folder. A rerun with the same
parameters loads the folder instead of retraining. With ``base_model`` set (real SD), there is nothing to
pretrain: the named pipeline *is* the target.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from . import paths
from .config import ConfigError, Params
from .models import DiffusionModel, build_miniature, load_pipeline
from .training import TrainSpec, train
from .world import ImageFolderData

# Parameters that change the trained weights; anything else (checkpoint_every, attack sizes) does not.
TARGET_PARAMS = ("world_seed", "image_size", "private_domains", "members_per_domain", "nonmembers_per_domain",
                 "public_domains", "images_per_public_domain", "data_dir", "domains_file", "unet_channels",
                 "text_width", "seed", "pretrain_steps", "pretrain_batch_size", "pretrain_lr")
PIPELINE = "pipeline"
HISTORY = "history.csv"


def target_dir(params: Params) -> Path:
    return paths.cache_dir("targets") / params.digest(*TARGET_PARAMS)


def train_spec(params: Params) -> TrainSpec:
    return TrainSpec(steps=params.pretrain_steps, batch_size=params.pretrain_batch_size, lr=params.pretrain_lr,
                     seed=params.seed, checkpoint_every=params.checkpoint_every)


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

    rows = data.pretraining_set()
    images = data.load_images(rows, params.image_size)
    pipe = build_miniature(params, data.meta["text"]).to(device)
    model = DiffusionModel(pipe)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps({k: params.to_dict()[k] for k in TARGET_PARAMS}, indent=1))
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
