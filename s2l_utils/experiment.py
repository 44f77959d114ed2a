"""Experiments: S2L against its controls, cell by cell, and the effects with bootstrap CIs.

A *cell* is one (method, attacked domain, seed) with its parameters. In a cell the target is fine-tuned under
several *conditions* and every model is attacked on the same images:

* ``s2l``: on the attacked domain's SP set (the attack);
* ``cross_domain``: on another private domain's SP set (control: plain fine-tuning on synthetic data of the
  same kind, but without knowledge of this domain);
* ``real_nonmember``: on real held-out images of the attacked domain (control: real fresh data of the domain);
* ``domain_transfer``: on the SP set plus real images of the public domains closest to it (S2L-DomainTrans).

The S2L effect is S2L minus the cross-domain control, not after minus before: fine-tuning of any kind can move
the attacks. The domain's non-members are split in two: the first half is the real-data control's training
set, the second half the non-members every model is scored on, so no model is scored on its training images.
Each model of a cell is saved in its own folder and read back on a rerun, so an interrupted notebook resumes.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import finetune, paths, synthesis, world
from .attacks import extraction, metrics, suite
from .config import ConfigError, Params

CONDITIONS = ("s2l", "cross_domain", "real_nonmember", "domain_transfer")
BEFORE = "target"
COMPARISONS = {  # name: (model, reference)
    "after - before": ("s2l", BEFORE),
    "S2L effect (S2L - cross-domain)": ("s2l", "cross_domain"),
    "S2L - real non-member": ("s2l", "real_nonmember"),
    "DomainTrans - S2L": ("domain_transfer", "s2l"),
}
CELL_SCORES, CELL_EXTRACTION, CELL_INFO = "scores.parquet", "extraction.parquet", "cell.json"


def check_conditions(conditions) -> None:
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or not conditions:
        raise ConfigError(f"unknown conditions {unknown or list(conditions)}; choose from {', '.join(CONDITIONS)}")


def split_nonmembers(data: world.ImageFolderData, domain: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(control half, evaluation half) of the domain's non-members, a fixed split by file order."""
    rows = data.split(domain, "nonmember")
    if len(rows) < 2:
        raise ConfigError(f"domain {domain!r} needs at least 2 non-members (one to train a control, one to score)")
    half = len(rows) // 2
    return rows.iloc[:half].reset_index(drop=True), rows.iloc[half:].reset_index(drop=True)


def evaluation_view(data: world.ImageFolderData) -> world.ImageFolderData:
    """The data with every private domain's control half of non-members removed (what all models are scored on)."""
    control = pd.concat([split_nonmembers(data, d)[0] for d in data.private_domains])
    return _view(data, data.meta[~data.meta["file_name"].isin(control["file_name"])])


def _view(data: world.ImageFolderData, meta: pd.DataFrame) -> world.ImageFolderData:
    view = copy.copy(data)
    view.meta = meta.reset_index(drop=True)
    return view


def cross_domain_of(data: world.ImageFolderData, domain: str) -> str:
    """The control's other private domain: the next one in order (cyclically)."""
    domains = data.private_domains
    if len(domains) < 2:
        raise ConfigError("the cross-domain control needs at least two private domains")
    return domains[(domains.index(domain) + 1) % len(domains)]


def related_public_rows(data: world.ImageFolderData, sp_images: torch.Tensor, params: Params) -> pd.DataFrame:
    """Real images of the ``transfer_domains`` public domains closest to the SP set (mean nearest distance of
    the SP images to each public domain's images): the borrowed prior knowledge of S2L-DomainTrans."""
    if not data.public_domains:
        raise ConfigError("domain transfer needs public domains in the data")
    distances = {}
    for domain in data.public_domains:
        rows = data.split(domain, "member")
        d, _ = extraction.nearest_neighbours(data.load_images(rows, params.image_size), sp_images)
        distances[domain] = float(d.mean())
    chosen = sorted(distances, key=distances.get)[:params.transfer_domains]
    return pd.concat([data.split(d, "member") for d in chosen], ignore_index=True)


def training_set(condition: str, params: Params, data: world.ImageFolderData, target, domain: str,
                 progress: bool = True) -> world.ImageFolderData:
    """What the target is fine-tuned on under ``condition`` (SP sets are generated once, then cached)."""
    if condition in ("s2l", "domain_transfer"):
        sp = synthesis.ensure_sp_set(params, data, target, domain, progress)
        if condition == "s2l":
            return sp
        public = related_public_rows(data, sp.load_images(sp.pretraining_set(), params.image_size), params)
        rows = pd.concat([sp.pretraining_set().assign(file_name=lambda r: [str(sp.folder / f) for f in r["file_name"]]),
                          public.assign(file_name=[str(data.folder / f) for f in public["file_name"]])],
                         ignore_index=True)
        return _view(_absolute(data), rows)
    if condition == "cross_domain":
        return synthesis.ensure_sp_set(params, data, target, cross_domain_of(data, domain), progress)
    if condition == "real_nonmember":
        control, _ = split_nonmembers(data, domain)
        return _view(data, control.assign(split="member", text=world.domain_prompt(domain)))
    check_conditions([condition])


def _absolute(data: world.ImageFolderData) -> world.ImageFolderData:
    """A view whose file names may be absolute paths (joining an absolute path keeps it)."""
    view = copy.copy(data)
    view.folder = Path("/")
    return view


def run_cell(params: Params, data: world.ImageFolderData, target, out_dir: Path, conditions=CONDITIONS[:3],
             device: str = "cpu", progress: bool = True, label: dict | None = None):
    """Attack the target and a model fine-tuned under each condition, on the attacked domain.

    ``params`` fixes the method, domain (``target_domain``), seed and every size. Returns (scores, extraction
    matches), both tagged with ``label`` (e.g. method, domain, seed and any swept value). Each model's results
    are saved in ``out_dir/<condition>/`` and read back instead of recomputed, so an interrupted cell resumes
    and cells that differ only in their list of conditions share the common ones.
    """
    check_conditions(conditions)
    label = {"method": params.method, "domain": synthesis.resolve_domain(params, data), "seed": params.seed,
             **(label or {})}
    context = {}  # the evaluation set, training images and threshold, built once when a model needs them
    scores, matches = [], []
    for condition in (BEFORE, *conditions):
        folder = target_results_dir(params) if condition == BEFORE else out_dir / condition
        with paths.cache_lock(folder):
            if not (folder / CELL_INFO).is_file():
                _evaluate_condition(condition, params, data, target, label["domain"], folder, context, device,
                                    progress)
        scores.append(pd.read_parquet(folder / CELL_SCORES))
        matches.append(pd.read_parquet(folder / CELL_EXTRACTION))
    return (pd.concat(scores, ignore_index=True).assign(**label),
            pd.concat(matches, ignore_index=True).assign(**label))


def _evaluate_condition(condition: str, params: Params, data: world.ImageFolderData, target, domain: str,
                        folder: Path, context: dict, device: str, progress: bool) -> None:
    """Fine-tune (unless ``condition`` is the target itself), attack, and save the results into ``folder``."""
    started = time.perf_counter()
    if not context:
        context["evaluation"] = evaluation_view(data)
        context["training"] = suite.training_images(data, params.image_size)
        evaluation = context["evaluation"]
        context["threshold"] = suite.extraction_threshold(evaluation, evaluation.private_domains,
                                                          context["training"][1], params)
    pipe, rewrite = target, None
    if condition != BEFORE:
        trained_on = training_set(condition, params, data, target, domain, progress)
        # fine-tune a copy of the very target attacked here (where it was loaded from): a cell's seed varies the
        # SP set and the fine-tuning, while params.seed would otherwise also select a target pretrained with it
        result = finetune.finetune(params.method, params, trained_on, folder, domain, None, device, progress,
                                   base=getattr(target, "name_or_path", None) or None)
        tuned = finetune.load_finetuned(result.folder, device)
        pipe, rewrite = tuned.pipe, tuned.rewrite
    scores = suite.membership_scores(pipe, context["evaluation"], [domain], params, rewrite, progress=False)
    sample_params = dataclasses.replace(params, extraction_samples=params.main_extraction_samples)
    generations, prompted = suite.generate_for_domains(pipe, [domain], sample_params, rewrite, progress=False)
    rows, images = context["training"]
    found = suite.extraction_matches(generations, prompted, rows, images, context["threshold"], params)
    folder.mkdir(parents=True, exist_ok=True)
    scores.assign(condition=condition).to_parquet(folder / CELL_SCORES, index=False)
    found.assign(condition=condition, threshold=context["threshold"]).to_parquet(folder / CELL_EXTRACTION, index=False)
    (folder / CELL_INFO).write_text(json.dumps({"condition": condition, "threshold": context["threshold"],
                                                "seconds": time.perf_counter() - started}))


def _paired_draws(scores: pd.DataFrame, condition: str, n_bootstrap: int, seed: int) -> dict:
    """Point estimates and bootstrap draws of each metric for one condition; the same resampled images for
    every condition (same seed, same image order), so differences between conditions are paired."""
    rows = scores[scores["condition"] == condition].sort_values(["is_member", "file_name"])
    members = rows.loc[rows["is_member"], "score"].to_numpy()
    nonmembers = rows.loc[~rows["is_member"], "score"].to_numpy()
    rng = np.random.default_rng(seed)
    m_idx = rng.integers(0, len(members), (n_bootstrap, len(members)))
    n_idx = rng.integers(0, len(nonmembers), (n_bootstrap, len(nonmembers)))
    point = metrics.batched_metrics(members[None], nonmembers[None], (0.01,))
    draws = metrics.batched_metrics(members[m_idx], nonmembers[n_idx], (0.01,))
    return {name: (float(point[name][0]), draws[name]) for name in ("auc", "tpr@1%fpr", "asr")}


def _extraction_draws(matches: pd.DataFrame, condition: str, n_bootstrap: int, seed: int) -> dict:
    rows = matches[matches["condition"] == condition]
    hits = rows["extracted"].to_numpy()
    files = np.where(hits, rows["nearest_file"].to_numpy(), None)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), (n_bootstrap, len(rows)))
    distinct = np.array([len(set(files[i][hits[i]])) for i in idx])
    return {"extracted": (float(hits.sum()), hits[idx].sum(1).astype(float)),
            "distinct_images": (float(len(set(files[hits]))), distinct.astype(float))}


def cell_tables(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int = 500, seed: int = 0):
    """(metrics, effects) of one cell, tidy. Metrics: condition, attack, metric, value, lo, hi. Effects: one
    row per comparison in ``COMPARISONS`` whose models the cell has: delta, lo, hi (paired bootstrap)."""
    keys = {k: scores[k].iloc[0] for k in scores.columns
            if k not in ("attack", "file_name", "is_member", "score", "condition") and scores[k].nunique() == 1}
    conditions = list(dict.fromkeys(scores["condition"]))
    estimates = {}
    for attack, group in scores.groupby("attack", sort=False):
        for condition in conditions:
            estimates[(attack, condition)] = _paired_draws(group, condition, n_bootstrap, seed)
    for condition in conditions:
        estimates[("extraction", condition)] = _extraction_draws(matches, condition, n_bootstrap, seed)
    metric_rows, effect_rows = [], []
    for (attack, condition), values in estimates.items():
        for name, (value, draws) in values.items():
            lo, hi = np.percentile(draws, [2.5, 97.5])
            metric_rows.append({**keys, "condition": condition, "attack": attack, "metric": name, "value": value,
                                "lo": lo, "hi": hi})
    for comparison, (model, reference) in COMPARISONS.items():
        if model not in conditions or reference not in conditions:
            continue
        for attack in dict.fromkeys(a for a, _ in estimates):
            for name, (value, draws) in estimates[(attack, model)].items():
                ref_value, ref_draws = estimates[(attack, reference)][name]
                lo, hi = np.percentile(draws - ref_draws, [2.5, 97.5])
                effect_rows.append({**keys, "comparison": comparison, "attack": attack, "metric": name,
                                    "delta": value - ref_value, "lo": lo, "hi": hi, "model_value": value,
                                    "reference_value": ref_value})
    return pd.DataFrame(metric_rows), pd.DataFrame(effect_rows)


def summarize(effects: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean delta over cells per group, with a 95% CI from the cells' own CIs (normal approximation,
    independent cells: se of the mean = sqrt(sum se_i^2) / n), and whether the CI excludes 0."""
    def combine(group: pd.DataFrame) -> pd.Series:
        se = (group["hi"] - group["lo"]) / (2 * 1.96)
        mean, se_mean = group["delta"].mean(), float(np.sqrt((se ** 2).sum())) / len(group)
        return pd.Series({"delta": mean, "lo": mean - 1.96 * se_mean, "hi": mean + 1.96 * se_mean,
                          "cells": len(group), "before": group["reference_value"].mean(),
                          "after": group["model_value"].mean()})

    table = effects.groupby(by, sort=False).apply(combine, include_groups=False).reset_index()
    table["verdict"] = np.select([table["lo"] > 0, table["hi"] < 0], ["up", "down"], "no change")
    return table


def paper_table(summary: pd.DataFrame, attacks=("secmi_ldm", "pia", "loss"), metric: str = "auc") -> pd.DataFrame:
    """Rows = methods; per attack: before, after S2L, and the S2L effect against the cross-domain control
    ("+0.012 [-0.03, 0.05]"); plus extraction counts before / after. The shape of the paper's main table."""
    out = {}
    for method, group in summary.groupby("method", sort=False):
        row = {}
        for attack in [*attacks, "extraction"]:
            name = "extracted" if attack == "extraction" else metric
            pick = group[(group["attack"] == attack) & (group["metric"] == name)].set_index("comparison")
            if "after - before" not in pick.index:
                continue
            row[f"{attack} before"] = pick.loc["after - before", "before"]
            row[f"{attack} after"] = pick.loc["after - before", "after"]
            if "S2L effect (S2L - cross-domain)" in pick.index:
                e = pick.loc["S2L effect (S2L - cross-domain)"]
                row[f"{attack} S2L effect"] = f"{e['delta']:+.3f} [{e['lo']:+.3f}, {e['hi']:+.3f}]"
        out[method] = row
    return pd.DataFrame.from_dict(out, orient="index")


# parameters that choose *which* cells run or how tables are drawn, not what happens inside a cell
PLAN_PARAMS = ("models", "attack_domains", "extraction_samples", "preview_samples", "methods", "experiment_domains",
               "seeds", "n_bootstrap", "ablation_domains", "ablation_seeds", "publish", "report_results", "conditions",
               "ablation_levels", "ablation_sp_sizes", "ablation_steps", "ablation_lrs", "map_lrs", "map_steps",
               "map_pretrain_steps", "device", "checkpoint_every", "ft_checkpoint_every")


def cell_dir(params: Params) -> Path:
    """A cell's cache folder, keyed by every parameter that changes its results: a finished cell is reused by any
    notebook that asks for it again (11 and 12 share their common cells) and an interrupted run resumes."""
    names = [n for n in params.to_dict() if n not in PLAN_PARAMS]
    return paths.cache_dir("cells") / params.digest(*names)


# parameters of the fine-tuning and of the SP set: the target's own results in a cell do not depend on them
FINETUNE_PARAMS = ("method", "ft_steps", "ft_batch_size", "ft_lr", "train_text_encoder", "prior_preservation",
                   "prior_images", "prior_loss_weight", "lora_rank", "lora_alpha", "ti_num_vectors", "ti_initializer",
                   "hn_layer_structure", "weight_noise_scale", "sp_level", "sp_size", "sp_sampler", "sp_steps",
                   "sp_guidance", "class_prompt", "transfer_domains")


def target_results_dir(params: Params) -> Path:
    """Where the target's results on a cell's domain are cached: shared by every method and fine-tuning setting."""
    names = [n for n in params.to_dict() if n not in PLAN_PARAMS + FINETUNE_PARAMS]
    return paths.cache_dir("cells") / f"target-{params.digest(*names)}"


def plan(params: Params, data: world.ImageFolderData, **swept) -> list[tuple[Params, dict]]:
    """The cells of methods x attacked domains x seeds x every swept parameter (name -> values), each as
    (its parameters, its label)."""
    for method in params.methods:
        finetune.get_method(method)
    domains = data.private_domains[:params.experiment_domains] if params.experiment_domains else data.private_domains
    cells = []
    grid = [dict(zip(swept, values)) for values in itertools.product(*swept.values())]
    for method in params.methods:
        for domain in domains:
            for seed in params.seeds:
                for point in grid:
                    cell = dataclasses.replace(params, method=method, target_domain=domain, seed=seed, **point)
                    cells.append((cell, {"method": method, "domain": domain, "seed": seed, **point}))
    return cells


def run_cells(cells: list[tuple[Params, dict]], data: world.ImageFolderData, target_for, conditions,
              device: str = "cpu", progress: bool = True):
    """Run (or read back) every cell; ``target_for(params)`` gives the target of a cell. Returns the scores and
    extraction matches of all cells, each row tagged with its cell's label and a ``cell`` id."""
    scores, matches = [], []
    for params, label in tqdm(cells, desc="cells", disable=not progress):
        folder = cell_dir(params)
        s, m = run_cell(params, data, target_for(params), folder, conditions, device, progress=False, label=label)
        scores.append(s.assign(cell=folder.name))
        matches.append(m.assign(cell=folder.name))
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


def results(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int = 500, seed: int = 0):
    """(metrics, effects) of every cell, tidy, one row per cell x condition (or comparison) x attack x metric."""
    tables = [cell_tables(scores[scores["cell"] == cell], matches[matches["cell"] == cell], n_bootstrap, seed)
              for cell in dict.fromkeys(scores["cell"])]
    return (pd.concat([t[0] for t in tables], ignore_index=True),
            pd.concat([t[1] for t in tables], ignore_index=True))
