"""The S2L attack end to end, as the notebooks walk it: target -> SP set -> fine-tune -> a first look.

``prepare`` gathers what every fine-tuning notebook starts from (data, target, attacked domain, SP set and,
with prior preservation, the class-image set); ``shake`` fine-tunes with one method; ``first_look`` compares
the target and the fine-tuned model on the attacked domain: generations, and the loss attack's AUC. The
full attack suite lives in ``s2l_utils.attacks``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import finetune, pretrain, sampling, synthesis, world
from .attacks import metrics, mia
from .config import Params
from .models import DiffusionModel


@dataclass
class Setting:
    params: Params
    data: world.ImageFolderData
    target: object  # the pretrained pipeline
    domain: str
    sp_set: world.ImageFolderData
    prior_set: world.ImageFolderData | None


def prepare(params: Params, device: str = "auto", progress: bool = True) -> Setting:
    """Data, target, attacked domain, SP set (generated once, then cached) and, if asked, the prior set."""
    data = world.load_data(params)
    domain = synthesis.resolve_domain(params, data)  # bad domain -> error before loading any model
    finetune.get_method(params.method)
    target = pretrain.load_target(params, device)
    sp_set = synthesis.ensure_sp_set(params, data, target, domain, progress)
    prior_set = None
    if params.prior_preservation:
        class_params = dataclasses.replace(params, sp_level="class", sp_size=params.prior_images)
        prior_set = synthesis.ensure_sp_set(class_params, data, target, domain, progress)
    return Setting(params, data, target, domain, sp_set, prior_set)


def shake(setting: Setting, out_dir: str | Path, device: str = "auto", progress: bool = True):
    """Fine-tune a fresh copy of the target with ``params.method`` on the SP set (resumable, cached per run)."""
    return finetune.finetune(setting.params.method, setting.params, setting.sp_set, out_dir, setting.domain,
                             setting.prior_set, device, progress)


def first_look(setting: Setting, tuned: finetune.Finetuned, samples: int = 8, progress: bool = True):
    """Generations of the domain prompt before / after, and the loss attack on the domain before / after."""
    p = setting.params
    prompt = world.domain_prompt(setting.domain)
    images = {
        "real members": setting.data.load_images(setting.data.split(setting.domain, "member").head(samples),
                                                 p.image_size),
        "target": sampling.generate(setting.target, [prompt] * samples, p.seed, p.sample_steps, p.guidance_scale,
                                    progress=progress),
        f"after {tuned.method}": sampling.generate(tuned.pipe, tuned.rewrite([prompt] * samples), p.seed,
                                                   p.sample_steps, p.guidance_scale, progress=progress),
    }
    rows = []
    for label, pipe, rewrite in (("target", setting.target, None), (tuned.method, tuned.pipe, tuned.rewrite)):
        scores = mia.score_domains(mia.loss_scores, DiffusionModel(pipe), setting.data, [setting.domain],
                                   progress=False, rewrite=rewrite, timesteps=p.loss_timesteps,
                                   noise_draws=p.loss_noise_draws, seed=p.seed)
        table = metrics.metrics_by_domain(scores, seed=p.seed).head(1)
        rows.append(table.assign(model=label))
    return images, pd.concat(rows, ignore_index=True)[["model", "domain", "auc", "auc_lo", "auc_hi", "tpr@1%fpr"]]
