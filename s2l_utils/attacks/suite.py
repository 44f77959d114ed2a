"""The attack suite over a list of models: which models, every membership-inference attack by name, and the
tidy tables (model, method, domain, attack, metric, value, lo, hi) that compare models side by side.

Models are named as users think of them: ``target`` (the pretrained model), ``runs`` (every finished
fine-tuning run of this profile), a run's name (``05_lora``), or a run or artefact folder. They are loaded one
at a time, so a list of real SD models does not need them all in memory at once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import finetune, pretrain, sampling, world
from ..config import ConfigError, Params
from ..models import DiffusionModel
from . import extraction, metrics, mia

PRETRAINED = "pretrained"
METRICS = metrics.MEMBERSHIP_METRICS
TIDY_COLUMNS = ["model", "method", "domain", "attack", "metric", "value", "lo", "hi"]

# each attack: the score function with its profile parameters, and the UNet calls it makes per image
SCORERS = {
    "loss": lambda m, x, c, p: mia.loss_scores(m, x, c, p.loss_timesteps, p.loss_noise_draws, p.seed,
                                               p.attack_batch_size),
    "secmi_paper": lambda m, x, c, p: mia.secmi_scores(m, x, c, p.secmi_t, p.secmi_k, "paper", p.attack_batch_size),
    "secmi_ldm": lambda m, x, c, p: mia.secmi_scores(m, x, c, p.secmi_t, p.secmi_k, "ldm", p.attack_batch_size),
    "pia": lambda m, x, c, p: mia.pia_scores(m, x, c, p.pia_t, False, batch_size=p.attack_batch_size),
    "pian": lambda m, x, c, p: mia.pia_scores(m, x, c, p.pia_t, True, batch_size=p.attack_batch_size),
}
UNET_CALLS = {
    "loss": lambda p: p.loss_timesteps * p.loss_noise_draws,
    "secmi_paper": lambda p: p.secmi_t // p.secmi_k + 2,  # t/k inversion steps, one down, one back up
    "secmi_ldm": lambda p: p.secmi_t // p.secmi_k + 2,  # (t+k)/k inversion steps, one down
    "pia": lambda p: 2,  # ε(x0, 0) and ε(x_t, t)
    "pian": lambda p: 2,
}


@dataclass(frozen=True)
class ModelRef:
    """A model to attack, not yet loaded: the pretrained target or a fine-tuning artefact."""

    label: str
    method: str
    artefact: Path | None = None  # None = the target

    def load(self, params: Params, device: str = "auto"):
        """(pipeline, caption rewrite or None)."""
        if self.artefact is None:
            return pretrain.load_target(params, device), None
        tuned = finetune.load_finetuned(self.artefact, device)
        return tuned.pipe, tuned.rewrite


def _artefact_of(folder: Path) -> Path | None:
    for candidate in (folder, folder / "artefact"):
        if (candidate / finetune.ARTEFACT_INFO).is_file():
            return candidate
    return None


def _ref(label: str, artefact: Path) -> ModelRef:
    return ModelRef(label, json.loads((artefact / finetune.ARTEFACT_INFO).read_text())["method"], artefact)


def resolve_models(entries: list[str], runs_roots: list[Path]) -> list[ModelRef]:
    """``target``, ``runs``, run names found in ``runs_roots`` (the first root holding a name wins) and run /
    artefact folders, in the order given.

    Raises a ``ConfigError`` naming what is available for anything that is not a model.
    """
    finished: dict[str, Path] = {}
    for root in reversed(runs_roots):
        finished.update({f.name: a for f in sorted(root.glob("[0-9][0-9]_*"))
                         if (f / "metrics.json").is_file() and (a := _artefact_of(f)) is not None})
    finished = dict(sorted(finished.items()))
    refs: list[ModelRef] = []
    for entry in entries:
        if entry == "target":
            refs.append(ModelRef("target", PRETRAINED))
        elif entry == "runs":
            refs.extend(_ref(name, artefact) for name, artefact in finished.items())
        elif entry in finished:
            refs.append(_ref(entry, finished[entry]))
        elif (artefact := _artefact_of(Path(entry))) is not None:
            refs.append(_ref(Path(entry).name if Path(entry).name != "artefact" else Path(entry).parent.name,
                             artefact))
        else:
            raise ConfigError(f"model {entry!r} is not 'target', 'runs', a finished fine-tuning run in "
                              f"{', '.join(map(str, runs_roots))} ({', '.join(finished) or 'none yet'}) "
                              "or an artefact folder")
    unique = list(dict.fromkeys(refs))
    if not unique:
        raise ConfigError(f"no models to attack: {entries} matched nothing in {', '.join(map(str, runs_roots))}")
    return unique


def attacked_domains(data: world.ImageFolderData, params: Params) -> list[str]:
    """The first ``attack_domains`` private domains (all with 0)."""
    domains = data.private_domains
    if not domains:
        raise ConfigError("the data has no private domains with held-out non-members to attack")
    return domains[:params.attack_domains] if params.attack_domains else domains


def membership_scores(pipe, data: world.ImageFolderData, domains: list[str], params: Params, rewrite=None,
                      progress: bool = True) -> pd.DataFrame:
    """Scores of every attack in ``params.attacks``: attack, domain, file_name, is_member, score."""
    unknown = sorted(set(params.attacks) - set(SCORERS))
    if unknown:
        raise ConfigError(f"unknown attacks {unknown}; choose from {', '.join(SCORERS)}")
    model = DiffusionModel(pipe)
    tables = []
    for attack in tqdm(params.attacks, desc="attacks", disable=not progress):
        scores = mia.score_domains(functools.partial(SCORERS[attack], p=params), model, data, domains,
                                   progress=False, rewrite=rewrite)
        tables.append(scores.assign(attack=attack))
    return pd.concat(tables, ignore_index=True)


def membership_table(scores: pd.DataFrame, n_bootstrap: int = 500, seed: int = 0) -> pd.DataFrame:
    """Tidy metrics with bootstrap 95% CIs, per model x attack x domain (plus ``POOLED``), from the scores of
    one or more models (columns model, method, attack, domain, is_member, score)."""
    rows = []
    for (model, method, attack), group in scores.groupby(["model", "method", "attack"], sort=False):
        wide = metrics.metrics_by_domain(group, n_bootstrap, seed)
        for record in wide.to_dict("records"):
            rows.extend({"model": model, "method": method, "domain": record["domain"], "attack": attack,
                         "metric": name, "value": record[name], "lo": record.get(f"{name}_lo"),
                         "hi": record.get(f"{name}_hi")} for name in METRICS)
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def training_images(data: world.ImageFolderData, size: int) -> tuple[pd.DataFrame, torch.Tensor]:
    rows = data.pretraining_set()
    return rows, data.load_images(rows, size)


def extraction_calibration(data: world.ImageFolderData, domains: list[str], training: torch.Tensor,
                           params: Params, generations: int | None = None) -> extraction.Calibration:
    """The extraction threshold calibrated on the held-out non-members of ``domains``, so that ``generations``
    novel generations (default: ``extraction_samples`` per domain, notebook 10's budget per model) are expected
    to give at most ``extraction_false_positives`` false copies. With a ``nonmember_shift`` the held-out images
    are read from the world's unshifted twin (``world.unshifted_twin``), so the shift leaves the threshold as it is.
    """
    heldout = pd.concat([data.split(d, "nonmember") for d in domains])
    budget = params.extraction_samples * len(domains) if generations is None else generations
    images = world.unshifted_twin(data, params).load_images(heldout, params.image_size)
    return extraction.calibrate_threshold(images, training, budget, params.extraction_false_positives,
                                          params.extraction_tiles)


def generate_for_domains(pipe, domains: list[str], params: Params, rewrite=None, progress: bool = True):
    """``extraction_samples`` seeded generations of each domain's prompt: (images, prompted domain per image).

    They draw from the ``extraction`` noise stream, never the SP set's, so a fine-tuned model is not scored on
    the very initial noise it was fine-tuned on."""
    prompted = [d for d in domains for _ in range(params.extraction_samples)]
    prompts = [world.domain_prompt(d) for d in prompted]
    prompts = rewrite(prompts) if rewrite else prompts
    images = sampling.generate(pipe, prompts, "extraction", params.seed, params.extraction_steps,
                               params.guidance_scale, batch_size=params.attack_batch_size, progress=progress)
    return images, prompted


def extraction_matches(generations: torch.Tensor, prompted: list[str], training_rows: pd.DataFrame,
                       training: torch.Tensor, threshold: float, params: Params) -> pd.DataFrame:
    """Each generation matched against the training set (with the CLIP pre-filter when ``clip_model`` is set)."""
    candidates = None
    if params.clip_model:
        if not Path(params.clip_model).is_dir():
            raise ConfigError(f"clip_model {params.clip_model!r} is not a local folder")
        candidates = extraction.embedding_prefilter(generations, training, params.clip_model,
                                                    params.clip_candidates)
    return extraction.match_generations(generations, prompted, training, training_rows, threshold,
                                        params.extraction_tiles, candidates)


def extraction_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Tidy extraction counts (columns model, method, domain and the counts of ``extraction_counts``) with a
    ``POOLED`` row per model (its ``distinct_other`` counts an image once per domain whose prompt copied it)."""
    names = [*extraction.COUNTS, "expected_false_positives"]
    rows = []
    for (model, method), group in counts.groupby(["model", "method"], sort=False):
        pooled = group[names].sum()
        for domain, record in [*zip(group["domain"], group.to_dict("records"), strict=True), (metrics.POOLED, pooled)]:
            rows.extend({"model": model, "method": method, "domain": domain, "attack": extraction.ATTACK,
                         "metric": name, "value": float(record[name]), "lo": None, "hi": None} for name in names)
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)
