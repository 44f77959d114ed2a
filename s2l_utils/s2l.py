"""The S2L attack end to end, as the notebooks walk it: target -> SP set -> fine-tune -> a first look.

``prepare`` gathers what every fine-tuning notebook starts from (data, target, attacked domain, SP set and,
with prior preservation, the class-image set); ``shake`` fine-tunes with one method and loads the result
back; ``first_look`` compares the target and the fine-tuned model on the attacked domain (generations, and
the loss attack's AUC); ``log_finetune`` records the metrics. The full attack suite is ``s2l_utils.attacks``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from . import finetune, plots, pretrain, sampling, synthesis, world
from .attacks import metrics, mia
from .config import Params
from .models import DiffusionModel
from .notebook import Run


@dataclass
class Setting:
    """What a fine-tuning notebook starts from (``prepare``)."""

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


def shake(setting: Setting, run: Run, progress: bool = True):
    """Fine-tune a fresh copy of the target with ``params.method`` on the SP set into ``run.dir/artefact``,
    draw its loss curve, and load the artefact back as every later step will: (result, Finetuned)."""
    p, device = setting.params, str(run.device)
    result = finetune.finetune(p.method, p, setting.sp_set, run.dir, setting.domain, setting.prior_set, device,
                               progress)
    if len(result.history):
        run.savefig(plots.loss_curve(result.history, window=20, title=f"{p.method} on the SP set"),
                    f"{p.method}_loss")
    print(f"{p.method}: {result.trainable_parameters:,} trained parameters, {result.seconds:.0f} s; artefact "
          f"{sorted(f.name for f in result.folder.iterdir())}")
    return result, finetune.load_finetuned(result.folder, device)


def first_look(setting: Setting, tuned: finetune.Finetuned, run: Run, samples: int = 8,
               progress: bool = True) -> pd.DataFrame:
    """Generations of the domain prompt before / after (figure), and the loss attack on the domain before /
    after (table); returns the table."""
    p = setting.params
    prompt = world.domain_prompt(setting.domain)
    images = {
        "real members": setting.data.load_images(setting.data.split(setting.domain, "member").head(samples),
                                                 p.image_size),
        "target": sampling.generate(setting.target, [prompt] * samples, "preview", p.seed, p.sample_steps,
                                    p.guidance_scale, progress=progress),
        f"after {tuned.method}": sampling.generate(tuned.pipe, tuned.rewrite([prompt] * samples), "preview", p.seed,
                                                   p.sample_steps, p.guidance_scale, progress=progress),
    }
    run.savefig(plots.image_rows(images, f"{setting.domain}: before and after {tuned.method}"),
                f"{tuned.method}_before_after")
    rows = []
    for label, pipe, rewrite in (("target", setting.target, None), (tuned.method, tuned.pipe, tuned.rewrite)):
        scores = mia.score_domains(mia.loss_scores, DiffusionModel(pipe), setting.data, [setting.domain],
                                   progress=False, rewrite=rewrite, timesteps=p.loss_timesteps,
                                   noise_draws=p.loss_noise_draws, seed=p.seed)
        table = metrics.metrics_by_domain(scores, seed=p.seed).head(1)
        rows.append(table.assign(model=label))
    attack = pd.concat(rows, ignore_index=True)[["model", "domain", "auc", "auc_lo", "auc_hi", "tpr@0fp"]]
    run.save_table(attack, "loss_attack_before_after")
    return attack


def log_finetune(run: Run, setting: Setting, result, attack: pd.DataFrame) -> dict:
    """The metrics every fine-tuning notebook records (paths relative to the run folder)."""
    history = result.history
    return run.log_metrics(
        method=setting.params.method, domain=setting.domain, sp_level=setting.params.sp_level,
        sp_size=len(setting.sp_set), trainable_parameters=result.trainable_parameters,
        finetune_seconds=result.seconds, final_loss=float(history["loss"].tail(20).mean()) if len(history) else None,
        artefact=str(result.folder.relative_to(run.dir)), loss_auc_before=float(attack["auc"].iloc[0]),
        loss_auc_after=float(attack["auc"].iloc[1]))
