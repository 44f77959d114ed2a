"""The main experiment: its cells (one method, attacked domain and seed; the target fine-tuned under each of
``CONDITIONS`` and every model, the target too, attacked on the same images), their cache folders and keys, the
finished models a cell may borrow (``lenders``, through ``store``), the comparisons between conditions
(``COMPARISONS``) and the tables drawn from them. CIs, p-values and verdicts come from ``stats``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import finetune, paths, pretrain, stats, synthesis, world
from .attacks import blind, extraction, suite
from .config import ConfigError, Params
from .store import SIBLING, TWIN, Loan, ModelStore

# conditions: what the target is fine-tuned on (``training_set``)
S2L, CROSS_DOMAIN, REAL_NONMEMBER, DOMAIN_TRANSFER = "s2l", "cross_domain", "real_nonmember", "domain_transfer"
CONDITIONS = (S2L, CROSS_DOMAIN, REAL_NONMEMBER, DOMAIN_TRANSFER)
CONTROL = "control"  # in a list of conditions or a comparison: the method's own control (``control_of``)
BEFORE = "target"  # the target itself, not fine-tuned
CONTROL_LABELS = {CROSS_DOMAIN: "cross-domain", REAL_NONMEMBER: "real non-member"}  # paper_table's control column
# comparison keys: the values of a table's ``comparison`` column (committed tables hold them: never rename one)
AFTER, EFFECT = "after - before", "S2L effect (S2L - control)"
VS_CROSS_DOMAIN, VS_REAL_NONMEMBER = "S2L - cross-domain", "S2L - real non-member"
TRANSFER = "DomainTrans - S2L"
COMPARISONS = {  # key: (model, reference); EFFECT's reference is resolved per method
    AFTER: (S2L, BEFORE),
    EFFECT: (S2L, CONTROL),
    VS_CROSS_DOMAIN: (S2L, CROSS_DOMAIN),
    VS_REAL_NONMEMBER: (S2L, REAL_NONMEMBER),
    TRANSFER: (DOMAIN_TRANSFER, S2L),
}


def check_conditions(conditions) -> None:
    """Raise ConfigError unless ``conditions`` is a non-empty list of ``CONDITIONS`` and ``CONTROL``."""
    unknown = sorted(set(conditions) - {*CONDITIONS, CONTROL})
    if unknown or not conditions:
        raise ConfigError(f"unknown conditions {unknown or list(conditions)}; choose from "
                          f"{', '.join((*CONDITIONS, CONTROL))}")


def control_of(method: str) -> str:
    """The condition the S2L effect of ``method`` is measured against: the real-non-member control for a method
    that reaches the domain through a textual-inversion token (``finetune.trains_token``), else the cross-domain
    control."""
    return REAL_NONMEMBER if finetune.trains_token(method) else CROSS_DOMAIN


def resolve_conditions(conditions, method: str) -> list[str]:
    """``conditions`` with ``CONTROL`` replaced by the method's control, each condition once."""
    check_conditions(conditions)
    return list(dict.fromkeys(control_of(method) if c == CONTROL else c for c in conditions))


def method_comparisons(method: str, chosen: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """``chosen`` comparisons for ``method``: ``CONTROL`` resolved, and the named comparison with the method's
    control left out when EFFECT is chosen (it would repeat EFFECT as a family of its own)."""
    control = control_of(method)
    out = {}
    for name, (model, reference) in chosen.items():
        if reference == CONTROL:
            out[name] = (model, control)
        elif not (EFFECT in chosen and (model, reference) == (S2L, control)):
            out[name] = (model, reference)
    return out


def compare_cells(estimates: stats.Estimates, chosen: dict[str, tuple[str, str]]) -> stats.Estimates:
    """``stats.compare`` per method with ``method_comparisons``, over the comparisons whose two conditions a
    method's cells have."""
    if "method" not in estimates.rows:
        raise ValueError("comparisons need each cell's method (its control depends on it): label the cells")
    parts = []
    for method, index in estimates.rows.groupby("method", sort=False).indices.items():
        part = stats.Estimates(estimates.rows.iloc[index].reset_index(drop=True), estimates.draws[index])
        present = set(part.rows["condition"])
        pairs = {name: pair for name, pair in method_comparisons(method, chosen).items() if set(pair) <= present}
        if pairs:
            parts.append(stats.compare(part, pairs))
    if not parts:
        raise ValueError(f"no cell has both conditions of any of {list(chosen)}")
    return stats.Estimates(pd.concat([p.rows for p in parts], ignore_index=True),
                           np.concatenate([p.draws for p in parts]))


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
    """What the target is fine-tuned on under ``condition`` when ``domain`` is attacked: ``S2L``, the domain's SP
    set; ``CROSS_DOMAIN``, the SP set of the next private domain (``trained_for``); ``REAL_NONMEMBER``, the control
    half of the domain's non-members (``split_nonmembers``) captioned with its name; ``DOMAIN_TRANSFER``, the SP
    set plus the closest public domains' images (``related_public_rows``). SP sets are generated once, then
    cached."""
    if condition in (S2L, DOMAIN_TRANSFER):
        sp = synthesis.ensure_sp_set(params, data, target, domain, progress)
        if condition == S2L:
            return sp
        public = related_public_rows(data, sp.load_images(sp.pretraining_set(), params.image_size), params)
        rows = pd.concat([sp.pretraining_set().assign(file_name=lambda r: [str(sp.folder / f) for f in r["file_name"]]),
                          public.assign(file_name=[str(data.folder / f) for f in public["file_name"]])],
                         ignore_index=True)
        return _view(_absolute(data), rows)
    if condition == CROSS_DOMAIN:
        return synthesis.ensure_sp_set(params, data, target, trained_for(condition, data, domain), progress)
    if condition == REAL_NONMEMBER:
        control, _ = split_nonmembers(data, domain)
        return _view(data, control.assign(split="member", text=world.domain_prompt(domain)))
    check_conditions([condition])


def trained_for(condition: str, data: world.ImageFolderData, domain: str) -> str:
    """The domain a condition's fine-tune is run for: the attacked one, except under the cross-domain control, which
    is S2L of the next domain (``cross_domain_of``), its token (if the method has one) standing for that domain."""
    return cross_domain_of(data, domain) if condition == CROSS_DOMAIN else domain


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
    conditions = resolve_conditions(conditions, params.method)
    label = {"method": params.method, "domain": synthesis.resolve_domain(params, data), "seed": params.seed,
             **(label or {})}
    inputs = _CellInputs(params, data)
    scores, matches = [], []
    for condition in (BEFORE, *conditions):
        folder = target_results_dir(params, target) if condition == BEFORE else out_dir / condition
        with paths.cache_lock(folder):
            if not ModelStore.finished(folder):
                _evaluate_condition(condition, params, data, target, label["domain"], folder, inputs, device,
                                    progress)
        condition_scores, condition_matches = ModelStore.read(folder)
        scores.append(condition_scores)
        matches.append(condition_matches)
    return (pd.concat(scores, ignore_index=True).assign(**label),
            pd.concat(matches, ignore_index=True).assign(**label))


class _CellInputs:
    """What every model of a cell is evaluated with, each built on first use and then kept."""

    def __init__(self, params: Params, data: world.ImageFolderData):
        self.params, self.data = params, data

    @functools.cached_property
    def evaluation(self) -> world.ImageFolderData:
        """The images every model is scored on (``evaluation_view``)."""
        return evaluation_view(self.data)

    @functools.cached_property
    def training(self):
        """(rows, images) of the pre-training set, what extraction matches generations against."""
        return suite.training_images(self.data, self.params.image_size)

    @functools.cached_property
    def calibration(self):
        """The extraction threshold, calibrated for one model's generations of a domain (at most
        ``extraction_false_positives`` false copies each)."""
        return suite.extraction_calibration(self.evaluation, self.evaluation.private_domains, self.training[1],
                                            self.params, generations=self.params.main_extraction_samples)


def _store() -> ModelStore:
    return ModelStore(paths.cache_dir("cells"))


def _evaluate_condition(condition: str, params: Params, data: world.ImageFolderData, target, domain: str,
                        folder: Path, inputs: _CellInputs, device: str, progress: bool) -> None:
    """Train or borrow ``condition``'s model (the target itself for ``BEFORE``), attack it, extract from it (or
    borrow the lender's matches) and write its finished folder; an ``SP_FREE`` model computed in its own cell is
    registered as the sibling of the cells at other SP parameters."""
    started = time.perf_counter()
    store = _store()
    threshold = inputs.calibration.threshold
    loan = store.find_lender(lenders(condition, params, target), threshold)
    if condition == BEFORE:
        pipe, rewrite, model_free = target, None, _blind_scores(params, inputs, domain)
    else:
        tuned, loan = _train_or_borrow(condition, params, data, target, domain, folder, loan, device, progress)
        pipe, rewrite, model_free = tuned.pipe, tuned.rewrite, None
    scores = _attack(pipe, rewrite, params, inputs, domain, model_free)
    matches = store.lent_matches(loan) if loan else _extract(pipe, rewrite, params, inputs, domain)
    expected = inputs.calibration.expected_false_positives(params.main_extraction_samples)  # one domain's
    store.write_finished(folder, condition, scores, matches, threshold, expected, time.perf_counter() - started,
                         loan)
    if condition in SP_FREE and not loan and folder == cell_dir(params, target) / condition:
        store.register(sibling_record(condition, params, target), folder)


def _blind_scores(params: Params, inputs: _CellInputs, domain: str) -> pd.DataFrame:
    """The blind baseline's scores (attack ``blind``, no model) of ``domain``, fitted on every private domain of
    the evaluation view; stored once per cell, with the target's results."""
    evaluation = inputs.evaluation
    scores = blind.blind_scores(evaluation, evaluation.private_domains, params.image_size, params.seed)
    return scores[scores["domain"] == domain]


def _train_or_borrow(condition: str, params: Params, data: world.ImageFolderData, target, domain: str,
                     folder: Path, loan: Loan | None, device: str,
                     progress: bool) -> tuple[finetune.Finetuned, Loan | None]:
    """(``condition``'s fine-tune of the very target attacked here, loaded from ``folder``; the loan it was
    borrowed on, or None). The fine-tune is copied from ``loan`` when the lender's recipe is this one's, else
    trained into ``folder``."""
    trained_on = training_set(condition, params, data, target, domain, progress)
    # the target's source, not the profile's: a cell's seed varies the SP set and the fine-tuning, not the target
    base, trained_domain = pretrain.target_source(params, target), trained_for(condition, data, domain)
    wanted = finetune.recipe(params.method, params, trained_on, trained_domain, None, base)
    if not (loan and ModelStore.borrow_finetune(loan, folder, wanted, params, base)):
        loan = None
        finetune.finetune(params.method, params, trained_on, folder, trained_domain, None, device, progress,
                          base=base)
    return finetune.load_finetuned(folder / "artefact", device), loan


def _attack(pipe, rewrite, params: Params, inputs: _CellInputs, domain: str,
            model_free: pd.DataFrame | None) -> pd.DataFrame:
    """The membership scores of ``pipe`` on ``domain``'s evaluation images, with ``model_free`` scores appended."""
    scores = suite.membership_scores(pipe, inputs.evaluation, [domain], params, rewrite, progress=False)
    return pd.concat([scores, model_free], ignore_index=True)


def _extract(pipe, rewrite, params: Params, inputs: _CellInputs, domain: str) -> pd.DataFrame:
    """``main_extraction_samples`` generations of ``domain`` by ``pipe``, matched against the training images at
    the cell's threshold."""
    sample_params = dataclasses.replace(params, extraction_samples=params.main_extraction_samples)
    images, prompted = suite.generate_for_domains(pipe, [domain], sample_params, rewrite, progress=False)
    rows, training = inputs.training
    return suite.extraction_matches(images, prompted, rows, training, inputs.calibration.threshold, params)


# parameters that choose *which* cells run or how tables are drawn, not what happens inside a cell
PLAN_PARAMS = ("models", "attack_domains", "extraction_samples", "preview_samples", "methods", "experiment_domains",
               "seeds", "n_bootstrap", "multiplicity", "ablation_domains", "ablation_seeds", "publish",
               "report_results", "conditions", "ablation_levels", "ablation_sp_sizes", "ablation_steps",
               "ablation_lrs", "map_lrs", "map_steps", "map_pretrain_steps", "device", "checkpoint_every",
               "ft_checkpoint_every", "regimes_results", "regimes_bootstrap")


# The code version of a cell's results, in the cell and target-results keys: bump it whenever a cell computes
# something else for unchanged parameters (the conditions' training sets, the attacks, extraction).
CELL_VERSION = 4


def cell_dir(params: Params, target=None) -> Path:
    """A cell's cache folder, keyed by every parameter that changes its results, the target it attacks and
    fine-tunes (``target``, the pipeline; ``pretrain.target_identity``: a cell's seed is not its target's), the
    data and the code versions of cells, SP sets and fine-tunes: a finished cell is reused by any notebook that
    asks for it again and an interrupted run resumes."""
    return paths.cache_dir("cells") / _cell_key(params, target)


def _cell_key(params: Params, target=None, without: tuple[str, ...] = ()) -> str:
    names = [n for n in params.to_dict() if n not in PLAN_PARAMS + without]
    return params.digest(*names, target=pretrain.target_identity(params, target), data=world.data_identity(params),
                         cell_version=CELL_VERSION, sp_version=synthesis.SP_VERSION,
                         finetune_version=finetune.FINETUNE_VERSION)


def lenders(condition: str, params: Params, target=None) -> dict[str, Path | None]:
    """The folders that may lend ``condition``'s model to a cell, by lender kind in the order they are asked:
    the unshifted twin's (``unshifted_twin_folder``) and a sibling's (``sibling_folder``)."""
    return {TWIN: unshifted_twin_folder(condition, params, target), SIBLING: sibling_folder(condition, params, target)}


# Conditions whose model never trains on a non-member: under a non-member shift of the miniature world, their
# fine-tune and generations equal those of the same cell in the unshifted twin world.
SHIFT_FREE = (BEFORE, S2L, CROSS_DOMAIN, DOMAIN_TRANSFER)


def unshifted_twin_folder(condition: str, params: Params, target=None) -> Path | None:
    """``condition``'s finished folder in the unshifted twin world's cell, or None: no shift, real data, a
    condition trained on non-members (not ``SHIFT_FREE``), or a twin not computed in this cache."""
    if not params.nonmember_shift or params.data_dir or condition not in SHIFT_FREE:
        return None
    twin = world.unshifted(params)
    folder = target_results_dir(twin, target) if condition == BEFORE else cell_dir(twin, target) / condition
    return ModelStore.finished(folder)


# Conditions whose model sees no SP set: their fine-tune, generations and scores do not depend on the parameters
# that only shape the SP-based training sets (``SP_SET_PARAMS``).
SP_FREE = (REAL_NONMEMBER,)
SP_SET_PARAMS = tuple(n for n in (*synthesis.SP_PARAMS, "transfer_domains") if n not in finetune.RECIPE_PARAMS)


def sibling_record(condition: str, params: Params, target=None) -> Path:
    """Where the cache records the first finished folder of an ``SP_FREE`` condition, keyed like its cell
    without ``SP_SET_PARAMS``."""
    return paths.cache_dir("cells") / "siblings" / f"{_cell_key(params, target, SP_SET_PARAMS)}-{condition}.json"


def sibling_folder(condition: str, params: Params, target=None) -> Path | None:
    """``condition``'s finished folder in a cell of this cache that differs from this one only in
    ``SP_SET_PARAMS`` (``sibling_record``), or None: a condition not ``SP_FREE``, real data (whose files may
    change under the same path), or none computed here."""
    if condition not in SP_FREE or params.data_dir:
        return None
    return _store().registered(sibling_record(condition, params, target))


# parameters of the fine-tuning and of the SP set: the target's own results in a cell do not depend on them (the
# seed does: it also seeds the attacks)
FINETUNE_PARAMS = tuple(name for name in dict.fromkeys(("method", *finetune.RECIPE_PARAMS, *SP_SET_PARAMS))
                        if name != "seed")


def target_results_dir(params: Params, target=None) -> Path:
    """Where the results of ``target`` (the pipeline) on a cell's domain are cached: shared by every method and
    fine-tuning setting, keyed by the target's identity (``pretrain.target_identity``), the data and
    ``CELL_VERSION``."""
    names = [n for n in params.to_dict() if n not in PLAN_PARAMS + FINETUNE_PARAMS]
    key = params.digest(*names, target=pretrain.target_identity(params, target),
                        data=world.data_identity(params), cell_version=CELL_VERSION)
    return paths.cache_dir("cells") / f"target-{key}"


def plan(params: Params, data: world.ImageFolderData, **swept) -> list[tuple[Params, dict]]:
    """The cells of methods x attacked domains x seeds x every swept parameter (name -> values), each as
    (its parameters, its label)."""
    for method in params.methods:
        finetune.get_method(method)
    domains = data.private_domains[:params.experiment_domains] if params.experiment_domains else data.private_domains
    cells = []
    grid = [dict(zip(swept, values, strict=True)) for values in itertools.product(*swept.values())]
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
        target = target_for(params)
        folder = cell_dir(params, target)
        s, m = run_cell(params, data, target, folder, conditions, device, progress=False, label=label)
        scores.append(s.assign(cell=folder.name))
        matches.append(m.assign(cell=folder.name))
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


def _cell_columns(rows: pd.DataFrame) -> list[str]:
    """The cell id and the labels ``run_cells`` tagged every row with (method, domain, seed, swept values)."""
    return [c for c in rows.columns if c not in ("condition", "comparison", "attack", "metric", "value",
                                                 "model_value", "reference_value")]


def results(scores: pd.DataFrame, matches: pd.DataFrame, n_bootstrap: int = 500, seed: int = 0):
    """(metrics, effects) of every cell, tidy, one row per cell x condition (or comparison) x attack x metric,
    with the cell's image-bootstrap 95% CI (``stats``). Metrics: value, lo, hi. Effects (each comparison of
    ``COMPARISONS`` whose models the cell has): delta, lo, hi, p, model_value, reference_value. For reading
    and saving: verdicts come from ``summarize``, which combines cells."""
    estimates = stats.cell_estimates(scores, matches, n_bootstrap, seed)
    keys = _cell_columns(estimates.rows)
    cell_metrics = stats.combine(estimates, [*keys, "condition", "attack", "metric"], seed)
    effects = stats.combine(compare_cells(estimates, COMPARISONS), [*keys, "comparison", "attack", "metric"], seed,
                            means=("model_value", "reference_value"))
    return (cell_metrics.drop(columns=["p", "cells", "domains", "draws"]),
            effects.drop(columns=["cells", "domains", "draws"]).rename(columns={"value": "delta"}))


def summarize(scores: pd.DataFrame, matches: pd.DataFrame, by: list[str], n_bootstrap: int = 2000, seed: int = 0,
              correction: str = "holm", comparisons: list[str] | None = None) -> pd.DataFrame:
    """The effects of ``comparisons`` (names in ``COMPARISONS``; default all) averaged over the cells of each
    group of ``by`` (which holds comparison, attack and metric), from the cells' raw scores and extraction
    matches: cluster-bootstrap 95% CIs (domains, then images), p-values adjusted with ``correction`` within each
    comparison x metric, and verdicts on attack strength and extraction (``stats``). Columns: ``by``, delta,
    lo, hi, p, p_adjusted, verdict, correction, cells, domains, draws, before and after (mean reference / model
    value)."""
    missing = {"comparison", "attack", "metric"} - set(by)
    if missing:
        raise ValueError(f"summarize needs {sorted(missing)} in by: a verdict is per comparison, attack and metric")
    unknown = sorted(set(comparisons or ()) - set(COMPARISONS))
    if unknown:
        raise ValueError(f"unknown comparisons {unknown}; choose from {list(COMPARISONS)}")
    chosen = {name: COMPARISONS[name] for name in (comparisons or COMPARISONS)}
    return judged_summary(compare_cells(stats.cell_estimates(scores, matches, n_bootstrap, seed), chosen), by, seed,
                          correction)


def judged_summary(effects: stats.Estimates, by: list[str], seed: int = 0, correction: str = "holm") -> pd.DataFrame:
    """``summarize``'s table from per-cell effects already compared (``compare_cells``), for callers that reuse
    the effects' draws for more than one summary (e.g. contrasts between regimes, ``s2l_utils.regimes``)."""
    table = stats.judge(stats.combine(effects, by, seed, means=("reference_value", "model_value")), correction)
    return table.rename(columns={"value": "delta", "reference_value": "before", "model_value": "after"})


def _effect_text(row: pd.Series) -> str:
    mark = {"up": " ↑", "down": " ↓"}.get(row["verdict"], "")
    return f"{row['delta']:+.3f} [{row['lo']:+.3f}, {row['hi']:+.3f}]{mark}"


def auc_text(row: pd.Series) -> str:
    """An AUC with its 95% CI (a row of ``blind_summary``)."""
    return f"{row['auc']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"


ALL_METHODS = "all methods"  # blind_summary's row over every cell
# the drift statistics the tables and the report show, those ``stats`` judges: the median distance of a generation
# to its nearest training image, to the nearest of the prompted identity, and the share nearest to that identity
DRIFT_SHOWN = stats.DRIFT_JUDGED


def blind_summary(scores: pd.DataFrame, n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The blind baseline's AUC (``attacks.blind``: a member / non-member classifier that never sees a model) per
    method and over every cell (method ``ALL_METHODS``), averaged over cells with its cluster-bootstrap 95% CI,
    like every MIA AUC: columns method, auc, lo, hi, cells, domains, draws. Near 0.5 no separation is detected by
    simple image statistics (a lower bound), and the MIA AUCs are read as what the model leaks; well above 0.5
    that much separation needs no model."""
    rows = scores[(scores["attack"] == blind.ATTACK) & (scores["condition"] == BEFORE)]
    if rows.empty:
        raise ValueError(f"the scores hold no blind-baseline rows (attack {blind.ATTACK!r} of the target): score "
                         "the target's results with this code")
    estimates = stats.cell_estimates(rows, pd.DataFrame(columns=["domain"]), n_bootstrap, seed)
    auc = (estimates.rows["metric"] == "auc").to_numpy()
    estimates = stats.Estimates(estimates.rows[auc].reset_index(drop=True), estimates.draws[auc])
    overall = stats.Estimates(estimates.rows.assign(method=ALL_METHODS), estimates.draws)
    table = pd.concat([stats.combine(e, ["method"], seed) for e in (estimates, overall)], ignore_index=True)
    return table.rename(columns={"value": "auc"})[["method", "auc", "lo", "hi", "cells", "domains", "draws"]]


def duplication_classes(summary: pd.DataFrame) -> list[int]:
    """The duplication classes k of the per-class extraction metrics (``own_copies_{k}x``), largest first."""
    found = summary["metric"].str.extract(r"^own_copies_(\d+)x$")[0].dropna()
    return sorted({int(k) for k in found}, reverse=True)


def paper_table(summary: pd.DataFrame, attacks=("secmi_ldm", "pia", "loss"),
                blind_auc: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows = methods. The blind baseline's AUC with its CI (``blind_summary``, when given); per attack: AUC
    before and after S2L, and the S2L effect on attack *strength* (change of |AUC - 0.5| against the method's
    control, named in the column ``control``, with its 95% CI; ↑ / ↓ where the corrected verdict is up / down).
    Extraction: copies of the attacked domain's own members per cell before and after, the S2L effect on them,
    the same for the most duplicated class of members when members are duplicated, and the distinct own members
    copied after S2L. The shape of the paper's main table."""
    columns = [(attack, attack, "auc", stats.STRENGTH) for attack in attacks]
    columns.append(("own copies", stats.EXTRACTION, "own_copies", "own_copies"))
    columns += [(f"own copies {k}x", stats.EXTRACTION, stats.class_metric("own_copies", k),
                 stats.class_metric("own_copies", k)) for k in duplication_classes(summary)[:1] if k > 1]
    blind_by_method = {} if blind_auc is None else {r["method"]: auc_text(r) for _, r in blind_auc.iterrows()}
    out = {}
    for method, group in summary.groupby("method", sort=False):
        row = {"control": CONTROL_LABELS[control_of(method)]}
        if method in blind_by_method:
            row["blind AUC"] = blind_by_method[method]
        for name, attack, before_after, effect in columns:
            mine = group[group["attack"] == attack]
            after = mine[(mine["comparison"] == AFTER) & (mine["metric"] == before_after)]
            if after.empty:
                continue
            row[f"{name} before"], row[f"{name} after"] = after["before"].iloc[0], after["after"].iloc[0]
            gain = mine[(mine["comparison"] == EFFECT) & (mine["metric"] == effect)]
            if len(gain):
                row[f"{name} S2L effect"] = _effect_text(gain.iloc[0])
        distinct = group[(group["comparison"] == AFTER) & (group["metric"] == "own_distinct")]
        if len(distinct):
            row["own distinct after"] = distinct["after"].iloc[0]
        out[method] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _before_after_effect(summary: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per method and metric (in the order of ``metrics``): mean before and after S2L, after − before and the
    S2L effect with their CIs; empty when the summary has none of ``metrics``."""
    rows = summary[summary["metric"].isin(metrics) & summary["comparison"].isin([AFTER, EFFECT])]
    out = {}
    for method in dict.fromkeys(rows["method"]):
        for metric in metrics:
            entry = {}
            for _, row in rows[(rows["method"] == method) & (rows["metric"] == metric)].iterrows():
                if row["comparison"] == AFTER:
                    entry.update(before=row["before"], after=row["after"], **{"after − before": _effect_text(row)})
                else:
                    entry["S2L effect"] = _effect_text(row)
            if entry:
                out[method, metric] = entry
    return pd.DataFrame.from_dict(out, orient="index").rename_axis(["method", "metric"]) if out else pd.DataFrame()


def extraction_by_class(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method and duplication class of the attacked domain's members (largest first): copies of them per
    cell (``own_copies_{k}x``) and distinct members copied (``own_distinct_{k}x``), before and after S2L, with
    after − before and the S2L effect (95% CIs); empty when the summary has no per-class metrics."""
    return _before_after_effect(summary, [stats.class_metric(kind, k) for k in duplication_classes(summary)
                                          for kind in ("own_copies", "own_distinct")])


def drift_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method, where the attacked domain's generations lie relative to the training data (``DRIFT_SHOWN``)
    before and after S2L, with after − before and the S2L effect (95% CIs): a rise of ``nearest_median`` moved
    them away from the training images, a fall towards them; empty when the summary has no drift metrics."""
    return _before_after_effect(summary, list(DRIFT_SHOWN))


def effect_panels(summary: pd.DataFrame, comparison: str = EFFECT) -> dict[str, pd.DataFrame]:
    """The ``comparison`` deltas of a summary for ``plots.effect_panels``, by panel: membership-inference
    strength per attack, own copies per duplication class, and the drift statistics; columns method, series,
    delta, lo, hi. Panels with no rows are left out."""
    rows = summary[summary["comparison"] == comparison]
    classes = {stats.class_metric("own_copies", k): f"{k}x" for k in duplication_classes(summary)}
    panels = {
        "membership inference: Δ |AUC − 0.5|": rows[rows["metric"] == stats.STRENGTH].assign(series=rows["attack"]),
        "extraction: Δ own copies per cell, by duplication": rows[rows["metric"].isin(classes)].assign(
            series=rows["metric"].map(classes)),
        "drift of the generations": rows[rows["metric"].isin(DRIFT_SHOWN)].assign(series=rows["metric"]),
    }
    return {title: panel[["method", "series", "delta", "lo", "hi"]] for title, panel in panels.items() if len(panel)}
