"""Experiment cells: the controls' training sets, the paired effects and their CIs, resumption, the report."""

import dataclasses
import json
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from s2l_utils import experiment, finetune, models, notebook, paths, pretrain, report, synthesis, world
from s2l_utils.attacks import suite
from s2l_utils.config import ConfigError
from s2l_utils.finetune import textual_inversion
from s2l_utils.store import CELL_EXTRACTION, CELL_INFO, CELL_SCORES, Loan, ModelStore


def test_nonmember_halves_are_disjoint_and_never_scored_after_training_a_control(smoke_data):
    for domain in smoke_data.private_domains:
        control, evaluation = experiment.split_nonmembers(smoke_data, domain)
        assert len(control) == len(evaluation) == 3
        assert not set(control["file_name"]) & set(evaluation["file_name"])
    view = experiment.evaluation_view(smoke_data)
    domain = smoke_data.private_domains[0]
    control, evaluation = experiment.split_nonmembers(smoke_data, domain)
    assert list(view.split(domain, "nonmember")["file_name"]) == list(evaluation["file_name"])
    assert view.split(domain, "member").equals(smoke_data.split(domain, "member"))
    assert len(smoke_data.meta) - len(view.meta) == 3 * len(smoke_data.private_domains)


def test_each_condition_trains_on_what_it_claims(smoke_params, smoke_data):
    params = dataclasses.replace(smoke_params, sp_size=4, sp_steps=2, transfer_domains=1)
    target = models.build_miniature(params, smoke_data.meta["text"])
    domain, other = smoke_data.private_domains[:2]
    s2l = experiment.training_set("s2l", params, smoke_data, target, domain, progress=False)
    assert set(s2l.meta["domain"]) == {domain} and len(s2l) == 4
    cross = experiment.training_set("cross_domain", params, smoke_data, target, domain, progress=False)
    assert set(cross.meta["domain"]) == {other} and experiment.cross_domain_of(smoke_data, domain) == other
    # the control is S2L of the other domain: its SP set as generated, captions naming it, for every method
    assert set(cross.pretraining_set()["text"]) == {world.domain_prompt(other)}
    token = experiment.training_set("cross_domain", dataclasses.replace(params, method="ti_lora"), smoke_data,
                                    target, domain, progress=False)
    assert token.folder == cross.folder and token.meta.equals(cross.meta)
    assert experiment.trained_for("cross_domain", smoke_data, domain) == other
    assert {experiment.trained_for(c, smoke_data, domain) for c in ("s2l", "real_nonmember")} == {domain}
    real = experiment.training_set("real_nonmember", params, smoke_data, target, domain, progress=False)
    control, _ = experiment.split_nonmembers(smoke_data, domain)
    assert list(real.pretraining_set()["file_name"]) == list(control["file_name"])
    assert set(real.pretraining_set()["text"]) == {world.domain_prompt(domain)}
    transfer = experiment.training_set("domain_transfer", params, smoke_data, target, domain, progress=False)
    rows = transfer.pretraining_set()
    assert len(rows) == 4 + 4 and set(rows["domain"]) - {domain} <= set(smoke_data.public_domains)
    assert transfer.load_images(rows, 16).shape == (8, 3, 16, 16), "SP and public images load from one view"
    with pytest.raises(ConfigError, match="unknown conditions"):
        experiment.check_conditions(["s2l", "shuffle"])


def test_textual_inversions_controls_train_a_token_each_and_the_cross_domain_one_is_the_target_here(
        smoke_params, smoke_data, tmp_path, monkeypatch):
    """The cross-domain control is S2L of the next domain: it trains that domain's token, as long as S2L trains
    this domain's, and attacked here by the name it is exactly the target (only another token changed). The
    real-non-member control, textual inversion's own control, trains *this* domain's token as long, on its real
    photos that were never in pre-training."""
    params = dataclasses.replace(smoke_params, method="textual_inversion", sp_size=4, sp_steps=2, ft_steps=4,
                                 target_domain="", attacks=["loss"])
    target, _ = pretrain.pretrain_target(params, smoke_data, progress=False)
    domain = smoke_data.private_domains[0]
    other = experiment.cross_domain_of(smoke_data, domain)
    initial = target.text_encoder.get_input_embeddings().weight[
        target.tokenizer.encode(params.ti_initializer, add_special_tokens=False)[0]].detach().float()
    seen, moved, attacked = {}, {}, {"target": (target, None)}
    original_train = finetune.train

    def recording(condition):
        def train(model, modules, images, captions, *args, **kwargs):
            seen[condition] = list(captions)
            return original_train(model, modules, images, captions, *args, **kwargs)
        return train

    for condition in ("s2l", "cross_domain", "real_nonmember"):
        monkeypatch.setattr(finetune, "train", recording(condition))
        trained_on = experiment.training_set(condition, params, smoke_data, target, domain, progress=False)
        trained_for = experiment.trained_for(condition, smoke_data, domain)
        result = finetune.finetune(params.method, params, trained_on, tmp_path / condition, trained_for,
                                   device="cpu", progress=False, base=pretrain.target_source(params, target))
        learned = load_file(result.folder / textual_inversion.WEIGHTS)[textual_inversion.placeholder_for(trained_for)]
        moved[condition] = float((learned[0] - initial).norm() / initial.norm())
        tuned = finetune.load_finetuned(result.folder, "cpu")
        attacked[condition] = (tuned.pipe, tuned.rewrite)
    assert seen["s2l"] == [f"photo of {textual_inversion.placeholder_for(domain)}"] * 4
    assert seen["cross_domain"] == [f"photo of {textual_inversion.placeholder_for(other)}"] * 4
    control_half, _ = experiment.split_nonmembers(smoke_data, domain)
    assert seen["real_nonmember"] == [f"photo of {textual_inversion.placeholder_for(domain)}"] * len(control_half)
    assert moved["s2l"] > 0.01 and all(0.5 < moved[c] / moved["s2l"] < 2 for c in moved), moved
    evaluation = experiment.evaluation_view(smoke_data)
    scores = {name: suite.membership_scores(pipe, evaluation, [domain], params, rewrite, progress=False)["score"]
              .to_numpy() for name, (pipe, rewrite) in attacked.items()}
    np.testing.assert_array_equal(scores["cross_domain"], scores["target"])
    assert not np.allclose(scores["s2l"], scores["target"]), "S2L's token is what prompts the domain"
    assert not np.allclose(scores["real_nonmember"], scores["target"]), "so is the real-non-member control's"


def _scores(condition_scores: dict, cell: str = "c0", domain: str = "A") -> pd.DataFrame:
    frames = []
    for condition, (members, nonmembers) in condition_scores.items():
        frames.append(pd.DataFrame({
            "domain": domain,
            "file_name": [f"m{i}" for i in range(len(members))] + [f"n{i}" for i in range(len(nonmembers))],
            "is_member": [True] * len(members) + [False] * len(nonmembers), "score": [*members, *nonmembers],
            "attack": "loss", "condition": condition, "method": "lora", "seed": 0, "cell": cell}))
    return pd.concat(frames, ignore_index=True)


def _matches(hits: dict, cell: str = "c0", domain: str = "A") -> pd.DataFrame:
    """condition -> per generation: None (no copy) or (copied file, its domain), every member seen once in
    pre-training (the match columns of ``extraction.match_generations``)."""
    return pd.concat([pd.DataFrame({"domain": domain, "generation": range(len(h)),
                                    "extracted": [f is not None for f in h],
                                    "nearest_file": [f[0] if f else "x" for f in h],
                                    "nearest_domain": [f[1] if f else domain for f in h],
                                    "distance": [0.1 if f else 0.5 for f in h], "nearest_duplicates": 1,
                                    "own_distance": [0.1 if f and f[1] == domain else 0.5 for f in h],
                                    "own_classes": "1", "condition": condition, "cell": cell, "method": "lora",
                                    "seed": 0})
                      for condition, h in hits.items()], ignore_index=True)


def test_effects_are_paired_differences_with_bootstrap_cis():
    rng = np.random.default_rng(0)
    noise = list(rng.normal(size=40)), list(rng.normal(size=40))
    separated = list(rng.normal(3, 1, 40)), list(rng.normal(0, 1, 40))
    scores = _scores({"target": noise, "s2l": separated, "cross_domain": noise})
    copies = [("a", "A"), ("a", "A"), ("b", "A"), ("z", "B")]  # own member a twice, own b, other domain's z
    matches = _matches({"target": [None] * 4, "s2l": copies, "cross_domain": [None] * 4})
    metrics_table, effects = experiment.results(scores, matches, n_bootstrap=200)
    auc = metrics_table[(metrics_table["metric"] == "auc")].set_index("condition")["value"]
    assert auc["s2l"] > 0.95 and auc["target"] == auc["cross_domain"]
    effect = effects[(effects["comparison"] == experiment.EFFECT) & (effects["metric"] == "auc")
                     & (effects["attack"] == "loss")].iloc[0]
    assert effect["delta"] == pytest.approx(auc["s2l"] - auc["cross_domain"]) and effect["lo"] > 0
    same = effects[(effects["comparison"] == experiment.AFTER) & (effects["attack"] == "loss")
                   & (effects["metric"] == "auc")]
    assert (same["delta"] > 0).all()
    extracted = effects[(effects["attack"] == "extraction") & (effects["comparison"] == experiment.AFTER)]
    delta = extracted.set_index("metric")["delta"]
    # (the per-class and drift metrics: every member is a 1x member; copies lie at 0.1, the rest at 0.5)
    assert delta[["own_copies", "own_distinct", "other_copies", "own_copies_1x", "own_distinct_1x", "nearest_median",
                  "identity_accuracy"]].to_dict() == pytest.approx(
        {"own_copies": 3.0, "own_distinct": 2.0, "other_copies": 1.0, "own_copies_1x": 3.0, "own_distinct_1x": 2.0,
         "nearest_median": -0.4, "identity_accuracy": -0.25})
    assert experiment.VS_REAL_NONMEMBER not in set(effects["comparison"]), "no real-data control in this cell"
    # identical conditions give exactly zero, with a zero-width interval (the bootstrap is paired)
    _, null = experiment.results(_scores({"target": noise, "s2l": noise}), _matches({"target": [None], "s2l": [None]}),
                                 n_bootstrap=50)
    null = null.dropna(subset=["delta"])  # tpr@1%fpr: NaN with 40 non-members
    assert (null["delta"] == 0).all() and (null["lo"] == 0).all() and (null["hi"] == 0).all()


def test_summary_averages_cells_of_all_domains():
    """The summary is the mean of the cells' effects, its CI resampling the domains and their images."""
    rng = np.random.default_rng(1)
    frames, matches = [], []
    for cell, domain, shift in (("c0", "A", 2.0), ("c1", "A", 1.0), ("c2", "B", 1.5)):
        members, nonmembers = list(rng.normal(0, 1, 30)), list(rng.normal(0, 1, 30))
        frames.append(_scores({"target": (members, nonmembers), "s2l": ([m + shift for m in members], nonmembers),
                               "cross_domain": (members, nonmembers)}, cell, domain))
        matches.append(_matches({c: [None] * 4 for c in ("target", "s2l", "cross_domain")}, cell, domain))
    scores, matches = pd.concat(frames, ignore_index=True), pd.concat(matches, ignore_index=True)
    _, effects = experiment.results(scores, matches, n_bootstrap=100)
    summary = experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], n_bootstrap=300,
                                   correction="bh")
    pick = dict(comparison=experiment.EFFECT, attack="loss", metric="advantage")
    cells = effects.loc[(effects[list(pick)] == pd.Series(pick)).all(axis=1)]
    row = summary.loc[(summary[list(pick)] == pd.Series(pick)).all(axis=1)].iloc[0]
    assert row["delta"] == pytest.approx(cells["delta"].mean()) and row["cells"] == 3 and row["domains"] == 2
    assert row["before"] == pytest.approx(cells["reference_value"].mean()) and row["lo"] > 0
    assert row["verdict"] == "up" and row["correction"] == "bh"
    with pytest.raises(ValueError, match="needs"):
        experiment.summarize(scores, matches, ["method", "attack"])


def test_the_blind_baseline_is_summarised_from_the_targets_rows_and_never_compared():
    """Domain A's members and non-members are told apart without a model (blind AUC 1), B's are not (0.5): over
    the cells of both, the blind AUC is 0.75, and resampling the two domains spans 0.5 to 1."""
    rng = np.random.default_rng(3)
    frames, matches = [], []
    for method in ("lora", "dreambooth"):
        for domain, (members, nonmembers) in {"A": ([1.0] * 8, [0.0] * 8), "B": ([0.5] * 8, [0.5] * 8)}.items():
            cell = f"{method}-{domain}"
            mia = (list(rng.normal(0, 1, 8)), list(rng.normal(0, 1, 8)))
            scores = _scores({"target": mia, "s2l": mia, "cross_domain": mia}, cell, domain)
            blind = _scores({"target": (members, nonmembers)}, cell, domain).assign(attack="blind")
            frames.append(pd.concat([scores, blind]).assign(method=method))
            matches.append(_matches({c: [None] * 2 for c in ("target", "s2l", "cross_domain")}, cell, domain)
                           .assign(method=method))
    scores, matches = pd.concat(frames, ignore_index=True), pd.concat(matches, ignore_index=True)
    table = experiment.blind_summary(scores, n_bootstrap=400).set_index("method")
    assert set(table.index) == {"lora", "dreambooth", experiment.ALL_METHODS} and len(table) == 3
    table = table.loc[["lora", "dreambooth", experiment.ALL_METHODS]]
    assert table["auc"].tolist() == pytest.approx([0.75] * 3)
    assert table["lo"].tolist() == pytest.approx([0.5] * 3) and table["hi"].tolist() == pytest.approx([1.0] * 3)
    assert table["cells"].tolist() == [2, 2, 4] and table["domains"].tolist() == [2, 2, 2]
    cell_metrics, effects = experiment.results(scores, matches, n_bootstrap=20)
    assert set(cell_metrics.loc[cell_metrics["attack"] == "blind", "condition"]) == {"target"}
    assert "blind" not in set(effects["attack"])
    summary = experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], n_bootstrap=20)
    assert "blind" not in set(summary["attack"])
    with pytest.raises(ValueError, match="no blind-baseline rows"):
        experiment.blind_summary(scores[scores["attack"] != "blind"], n_bootstrap=20)


def test_plan_is_the_full_grid_and_rejects_unknown_methods(smoke_params, smoke_data):
    params = dataclasses.replace(smoke_params, methods=["lora", "textual_inversion"], experiment_domains=2,
                                 seeds=[0, 1])
    cells = experiment.plan(params, smoke_data, ft_steps=[1, 2, 3])
    assert len(cells) == 2 * 2 * 2 * 3
    assert len({experiment.cell_dir(p) for p, _ in cells}) == len(cells), "every cell has its own cache folder"
    assert {(p.method, p.target_domain, p.seed, p.ft_steps) for p, _ in cells} == \
        {(c["method"], c["domain"], c["seed"], c["ft_steps"]) for _, c in cells}
    with pytest.raises(ValueError, match="unknown"):
        experiment.plan(dataclasses.replace(params, methods=["lorax"]), smoke_data)


def test_a_finished_cell_is_read_back_not_recomputed(smoke_params, smoke_data, tmp_path, monkeypatch):
    params = dataclasses.replace(smoke_params, method="lora", ft_steps=1, sp_size=4, sp_steps=2,
                                 main_extraction_samples=2, attacks=["loss", "pia"], target_domain="")
    target, _ = pretrain.pretrain_target(params, smoke_data, progress=False)  # fine-tuning starts from the saved target
    scores, matches = experiment.run_cell(params, smoke_data, target, tmp_path / "cell", ["s2l", "cross_domain"],
                                          progress=False)
    assert set(scores["condition"]) == {"target", "s2l", "cross_domain"}
    assert set(scores["attack"]) == {"loss", "pia", "blind"}
    # the blind baseline needs no model: scored once, with the target, on the very images the attacks score
    blind = scores[scores["attack"] == "blind"]
    assert set(blind["condition"]) == {"target"} and blind["score"].between(0, 1).all()
    loss = scores[(scores["attack"] == "loss") & (scores["condition"] == "target")]
    assert sorted(blind["file_name"]) == sorted(loss["file_name"])
    assert len(matches) == 3 * 2 and matches["threshold"].nunique() == 1
    monkeypatch.setattr(finetune, "finetune", lambda *a, **k: pytest.fail("a finished cell was fine-tuned again"))
    again, _ = experiment.run_cell(params, smoke_data, target, tmp_path / "cell", ["s2l", "cross_domain"])
    pd.testing.assert_frame_equal(scores, again)
    # a real cell's tables go through the statistics as they are
    summary = experiment.summarize(scores.assign(cell="c"), matches.assign(cell="c"),
                                   ["method", "comparison", "attack", "metric"], n_bootstrap=20)
    assert {"own_copies", "own_distinct", "other_copies", "advantage", "tpr@0fp"} <= set(summary["metric"])
    assert set(summary["comparison"]) == {experiment.AFTER, experiment.EFFECT}
    assert "blind" not in set(summary["attack"]), "no comparison includes the model-free baseline"
    blind_auc = experiment.blind_summary(scores.assign(cell="c"), n_bootstrap=20)
    assert list(blind_auc["method"]) == ["lora", experiment.ALL_METHODS] and blind_auc["auc"].between(0, 1).all()


def test_a_cells_seed_fine_tunes_the_target_it_attacks(smoke_params, smoke_data, tmp_path):
    """Seeds vary the SP set and the fine-tuning: a cell with another seed still fine-tunes the target it attacks,
    not a target pretrained with that seed (which does not exist)."""
    params = dataclasses.replace(smoke_params, method="lora", ft_steps=1, sp_size=4, sp_steps=2,
                                 main_extraction_samples=2, attacks=["loss"], target_domain="")
    target, _ = pretrain.pretrain_target(params, smoke_data, progress=False)
    cell = dataclasses.replace(params, seed=params.seed + 1)
    scores, _ = experiment.run_cell(cell, smoke_data, target, tmp_path / "cell", ["s2l"], progress=False)
    info = json.loads((tmp_path / "cell" / "s2l" / "artefact" / finetune.ARTEFACT_INFO).read_text())
    assert info["base"] == str(pretrain.target_dir(params) / pretrain.PIPELINE)
    assert info["params"]["seed"] == params.seed + 1 and set(scores["condition"]) == {"target", "s2l"}


def test_a_shifted_world_borrows_its_twins_models_and_gets_what_it_would_compute(smoke_params, tmp_path,
                                                                                 monkeypatch):
    """Under a non-member shift the target, S2L and cross-domain models never see a non-member: a finished cell of
    the unshifted twin lends their fine-tunes and extraction matches, and the cell's tables equal those computed
    from scratch. The real-non-member control and every membership score are computed anew."""
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "runs"))  # no twin cached before this test
    # DreamBooth+LoRA: a token and weights to lend
    params = dataclasses.replace(smoke_params, method="dreambooth_lora", ft_steps=1, sp_size=4, sp_steps=2,
                                 main_extraction_samples=2, attacks=["loss", "pia"], target_domain="",
                                 nonmember_shift=0.5)
    twin = world.unshifted(params)
    data, twin_data = world.load_data(params), world.load_data(twin)
    target, _ = pretrain.pretrain_target(twin, twin_data, progress=False)
    domain = synthesis.resolve_domain(params, data)
    assert synthesis.sp_key(params, domain, "t") == synthesis.sp_key(twin, domain, "t") != \
        synthesis.sp_key(dataclasses.replace(twin, member_duplicates=[2]), domain, "t")
    sp_images, sp_meta = synthesis.synthesize(target, data, domain, params, progress=False)
    twin_images, twin_meta = synthesis.synthesize(target, twin_data, domain, twin, progress=False)
    assert torch.equal(sp_images, twin_images) and sp_meta.equals(twin_meta), "so the twin's SP set is shared"
    conditions = ["s2l", "cross_domain", "real_nonmember"]
    assert all(experiment.unshifted_twin_folder(c, params, target) is None for c in ["target", *conditions])
    fresh = experiment.run_cell(params, data, target, tmp_path / "fresh", conditions, progress=False)
    experiment.run_cell(twin, twin_data, target, experiment.cell_dir(twin, target), conditions, progress=False)
    assert experiment.unshifted_twin_folder("real_nonmember", params, target) is None, "it trains on non-members"
    assert experiment.unshifted_twin_folder("s2l", twin, target) is None, "only a shifted world has a twin"
    shutil.rmtree(experiment.target_results_dir(params, target))  # the target's results are computed again too
    trained, generated = [], []
    real_finetune, real_generate = finetune.finetune, suite.generate_for_domains
    monkeypatch.setattr(finetune, "finetune", lambda *a, **k: trained.append(a[3].name) or real_finetune(*a, **k))
    monkeypatch.setattr(suite, "generate_for_domains",
                        lambda *a, **k: generated.append(1) or real_generate(*a, **k))
    borrowed = experiment.run_cell(params, data, target, tmp_path / "borrowed", conditions, progress=False)
    assert trained == ["real_nonmember"] and len(generated) == 1
    for computed, lent in zip(fresh, borrowed, strict=True):
        pd.testing.assert_frame_equal(computed, lent, check_exact=True)
    infos = {c: json.loads((tmp_path / "borrowed" / c / CELL_INFO).read_text()) for c in conditions}
    assert infos["s2l"]["twin"] == f"{experiment.cell_dir(twin, target).name}/s2l"
    assert infos["real_nonmember"]["twin"] is None
    lent = json.loads((tmp_path / "borrowed" / "s2l" / "artefact" / finetune.ARTEFACT_INFO).read_text())
    assert lent["params"]["nonmember_shift"] == 0.5, "the lent artefact is recorded as this cell's"
    assert lent["adopted_from"] == str(experiment.cell_dir(twin, target) / "s2l")
    # a finished run of another recipe lends nothing
    source = experiment.cell_dir(twin, target) / "s2l"
    other = {**json.loads((source / finetune.RECIPE).read_text()), "seed": 99}
    assert not finetune.adopt(source, tmp_path / "other", other, params, lent["base"])
    assert not (tmp_path / "other").exists()


def test_the_store_lends_a_finished_folder_at_the_same_threshold_and_a_fine_tune_of_the_same_recipe(
        smoke_params, tmp_path, monkeypatch):
    """A lender is the first finished candidate extracted at the borrower's threshold; its fine-tune is copied
    only for the same recipe; a borrower's folder holds the lender's matches and names it; a registered folder
    is found while it is finished; cell.json is written after the results."""
    models_store = ModelStore(tmp_path)
    scores = pd.DataFrame({"file_name": ["m0", "n0"], "score": [0.9, 0.1]})
    matches = pd.DataFrame({"generation": [0, 1], "extracted": [True, False]})
    real_write_json = notebook.write_json

    def write_json(path, payload):
        if path.name == CELL_INFO:
            assert (path.parent / CELL_SCORES).is_file() and (path.parent / CELL_EXTRACTION).is_file()
        real_write_json(path, payload)

    monkeypatch.setattr(notebook, "write_json", write_json)
    lender, other, unfinished = tmp_path / "c1" / "s2l", tmp_path / "c2" / "s2l", tmp_path / "c3" / "s2l"
    models_store.write_finished(lender, "s2l", scores, matches, 0.25, 0.01, 1.0, None)
    models_store.write_finished(other, "s2l", scores, matches, 0.5, 0.01, 1.0, None)
    unfinished.mkdir(parents=True)
    scores.to_parquet(unfinished / CELL_SCORES)
    info = json.loads((lender / CELL_INFO).read_text())
    assert info == {"condition": "s2l", "threshold": 0.25, "expected_false_positives": 0.01, "seconds": 1.0,
                    "twin": None, "sibling": None}
    assert ModelStore.finished(unfinished) is None and ModelStore.finished(lender) == lender
    assert models_store.find_lender({"twin": unfinished, "sibling": lender}, 0.25) == Loan("sibling", lender)
    assert models_store.find_lender({"twin": lender, "sibling": tmp_path / "c2b"}, 0.25) == Loan("twin", lender)
    assert models_store.find_lender({"twin": None, "sibling": other}, 0.25) is None, "another threshold"
    loan = Loan("sibling", lender)
    borrower = tmp_path / "c4" / "s2l"
    models_store.write_finished(borrower, "s2l", scores, models_store.lent_matches(loan), 0.25, 0.01, 2.0, loan)
    assert json.loads((borrower / CELL_INFO).read_text())["sibling"] == "c1/s2l"
    for mine, lent in zip(ModelStore.read(borrower), ModelStore.read(lender), strict=True):
        pd.testing.assert_frame_equal(mine, lent, check_exact=True)
    # a fine-tune is borrowed for its recipe only
    (lender / "artefact").mkdir()
    (lender / "artefact" / finetune.ARTEFACT_INFO).write_text(json.dumps({"method": "lora"}))
    (lender / "artefact" / "weights.bin").write_bytes(b"w")
    (lender / finetune.RECIPE).write_text(json.dumps({"method": "lora", "seed": 0}))
    assert not ModelStore.borrow_finetune(loan, tmp_path / "c5", {"method": "lora", "seed": 1}, smoke_params, "b")
    assert not (tmp_path / "c5").exists()
    assert ModelStore.borrow_finetune(loan, borrower, {"method": "lora", "seed": 0}, smoke_params, "b")
    assert (borrower / "artefact" / "weights.bin").read_bytes() == b"w"
    assert json.loads((borrower / "artefact" / finetune.ARTEFACT_INFO).read_text())["adopted_from"] == str(lender)
    record = tmp_path / "siblings" / "key-real_nonmember.json"
    assert models_store.registered(record) is None
    models_store.register(record, lender)
    assert json.loads(record.read_text()) == {"folder": "c1/s2l"} and models_store.registered(record) == lender
    (lender / CELL_INFO).unlink()
    assert models_store.registered(record) is None, "a folder no longer finished is not lent"


def test_cells_differing_only_in_sp_guidance_share_the_model_that_sees_no_sp_set(smoke_params, tmp_path,
                                                                                  monkeypatch):
    """The real-non-member control never sees an SP set: the first cell to finish it lends its fine-tune and
    extraction matches to a cell at another SP guidance, which gets what it would compute; the S2L model, whose SP
    set the guidance changes, and a cell of another recipe borrow nothing."""
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "runs"))  # no sibling cached before this test
    params = dataclasses.replace(smoke_params, method="dreambooth_lora", ft_steps=1, sp_size=4, sp_steps=2,
                                 main_extraction_samples=2, attacks=["loss", "pia"], target_domain="")
    other = dataclasses.replace(params, sp_guidance=params.sp_guidance + 2.0)
    data = world.load_data(params)
    target, _ = pretrain.pretrain_target(params, data, progress=False)
    conditions = ["s2l", "real_nonmember"]
    fresh = experiment.run_cell(other, data, target, tmp_path / "fresh", conditions, progress=False)
    assert experiment.sibling_folder("real_nonmember", other, target) is None, "a folder outside the cache lends none"
    first = experiment.cell_dir(params, target)
    experiment.run_cell(params, data, target, first, conditions, progress=False)
    assert experiment.sibling_folder("real_nonmember", other, target) == first / "real_nonmember"
    assert experiment.sibling_folder("s2l", other, target) is None, "its SP set depends on the guidance"
    for change in ({"ft_steps": 2}, {"nonmember_shift": 0.5}, {"data_dir": str(tmp_path)}):
        assert experiment.sibling_folder("real_nonmember", dataclasses.replace(other, **change), target) is None, change
    trained, generated = [], []
    real_finetune, real_generate = finetune.finetune, suite.generate_for_domains
    monkeypatch.setattr(finetune, "finetune", lambda *a, **k: trained.append(a[3].name) or real_finetune(*a, **k))
    monkeypatch.setattr(suite, "generate_for_domains",
                        lambda *a, **k: generated.append(1) or real_generate(*a, **k))
    borrowed = experiment.run_cell(other, data, target, experiment.cell_dir(other, target), conditions,
                                   progress=False)
    assert trained == ["s2l"] and len(generated) == 1
    for computed, lent in zip(fresh, borrowed, strict=True):
        pd.testing.assert_frame_equal(computed, lent, check_exact=True)
    infos = {c: json.loads((experiment.cell_dir(other, target) / c / CELL_INFO).read_text())
             for c in conditions}
    assert infos["real_nonmember"]["sibling"] == f"{first.name}/real_nonmember"
    assert infos["s2l"]["sibling"] is None
    assert experiment.sibling_folder("real_nonmember", other, target) == first / "real_nonmember", \
        "a borrower does not register itself"


def test_report_numbers_come_from_the_table(tmp_path):
    rows = []
    for method, delta in (("lora", 0.08), ("dreambooth", -0.02)):
        for comparison, metric, d in ((experiment.EFFECT, "advantage", delta), (experiment.AFTER, "auc", delta / 2)):
            rows.append({"method": method, "comparison": comparison, "attack": "pia", "metric": metric, "delta": d,
                         "lo": d - 0.03, "hi": d + 0.03, "p": 0.001 if d - 0.03 > 0 else 0.4, "cells": 1,
                         "before": 0.7, "after": 0.7 + d, "verdict": "up" if d - 0.03 > 0 else "no change",
                         "correction": "holm", "draws": 2000})
    summary = pd.DataFrame(rows)
    claims = report.verdicts({"main": summary})
    assert len(claims) == 2 and claims[0]["agrees"] == "partly (1 of 2)"
    assert "mean +0.030" in claims[0]["measured"] and "up 1, down 0 of 2" in claims[0]["measured"]
    assert "lora +0.080 [+0.050, +0.110]" in claims[0]["measured"]
    table = experiment.paper_table(summary, attacks=["pia"])
    assert table.loc["lora", "pia S2L effect"] == "+0.080 [+0.050, +0.110] ↑"
    assert table.loc["dreambooth", "pia after"] == pytest.approx(0.69)  # after - before row: 0.7 + (-0.02 / 2)
    with pytest.raises(FileNotFoundError, match="run notebook 11"):
        report.collect([tmp_path])


def test_the_report_recomputes_a_sweeps_summary_from_its_raw_scores(tmp_path):
    rng = np.random.default_rng(2)
    points = []
    for cell, domain in (("c0", "A"), ("c1", "B")):  # one sweep point each
        members, nonmembers = list(rng.normal(0, 1, 12)), list(rng.normal(0, 1, 6))
        scores = _scores({"target": (members, nonmembers), "s2l": ([m + 1 for m in members], nonmembers),
                          "cross_domain": (members, nonmembers)}, cell, domain)
        blind = _scores({"target": (list(rng.normal(0, 1, 12)), list(rng.normal(0, 1, 6)))}, cell, domain)
        matches = _matches({c: [None, (f"{domain}1", domain)] for c in ("target", "s2l", "cross_domain")}, cell,
                           domain)
        points.append((pd.concat([scores, blind.assign(attack="blind")], ignore_index=True), matches))
    scores = pd.concat([s for s, _ in points], ignore_index=True)
    matches = pd.concat([m for _, m in points], ignore_index=True)
    collected = []
    for run, (s, m) in enumerate([*points, points[0]]):  # the first cell read back by a second run
        for name, table in (("s2l_scores", s), ("s2l_extraction", m)):
            collected.append(table.assign(table=name, run_dir=f"run{run}", notebook="11_s2l_main",
                                          methods=[["lora"]] * len(table)))
    path = tmp_path / "results.parquet"
    pd.concat(collected, ignore_index=True).to_parquet(path)
    tables = report.from_sweep(path, n_bootstrap=200)
    main = tables["main"]
    expected = experiment.summarize(scores, matches, ["method", "comparison", "attack", "metric"], 200)
    pd.testing.assert_frame_equal(main, expected)
    pd.testing.assert_frame_equal(tables["blind"], experiment.blind_summary(scores, 200))
    assert tables["blind"]["cells"].tolist() == [2, 2], "the blind rows of both cells, once each"
    assert set(main["cells"]) == {2}
    only_scores = tmp_path / "only_scores.parquet"
    pd.concat(collected[::2], ignore_index=True).to_parquet(only_scores)
    with pytest.raises(ValueError, match="s2l_extraction"):
        report.from_sweep(only_scores)
    with pytest.raises(FileNotFoundError, match="sweep results not found"):
        report.from_sweep(tmp_path / "missing.parquet")


def test_a_sweeps_report_publishes_under_the_sweeps_profile(tmp_path):
    """``run --profile full 14 -p report_results=...`` shows full's results: figures and README go under ``full``;
    an override that changes results keeps its own name."""
    report_only = tmp_path / "full-1" / "profile.yaml"
    report_only.parent.mkdir()
    report_only.write_text(yaml.safe_dump({"description": "x", "extends": "full", "report_results": "r.parquet",
                                           "publish": True}))
    changed = tmp_path / "full-2" / "profile.yaml"
    changed.parent.mkdir()
    changed.write_text(yaml.safe_dump({"extends": "full", "report_results": "r.parquet", "ft_steps": 5}))
    assert notebook.results_name(str(report_only)) == "full"
    assert notebook.results_name(str(changed)) == "full-2"
    assert notebook.results_name("mini") == "mini"


def test_jobs_sharing_a_cache_entry_build_it_one_at_a_time(tmp_path):
    """Two parallel sweep jobs that need the same SP set or target results: the second waits for the first."""
    events, entry = [], tmp_path / "cache" / "entry"

    def build(name):
        with paths.cache_lock(entry):
            if not entry.exists():
                events.append(f"{name} builds")
                time.sleep(0.3)
                entry.mkdir()
            events.append(f"{name} reads")

    jobs = [threading.Thread(target=build, args=(name,)) for name in ("a", "b")]
    for job in jobs:
        job.start()
        time.sleep(0.05)
    for job in jobs:
        job.join()
    assert events == ["a builds", "a reads", "b reads"]


def test_each_method_is_set_against_its_own_control():
    """Methods that change weights against the cross-domain control; token methods against the real-non-member
    control (a token for this domain trained on its real, never pre-trained photos). `control` in a list of
    conditions stands for it, and the named comparison that would repeat the S2L effect is left out."""
    assert {m: experiment.control_of(m) for m in ("lora", "dreambooth", "hypernetwork", "textual_inversion",
                                                  "ti_lora")} == {
        "lora": "cross_domain", "dreambooth": "cross_domain", "hypernetwork": "cross_domain",
        "textual_inversion": "real_nonmember", "ti_lora": "real_nonmember"}
    assert experiment.resolve_conditions(["s2l", "control"], "lora") == ["s2l", "cross_domain"]
    assert experiment.resolve_conditions(["s2l", "real_nonmember", "control"], "ti_lora") == ["s2l", "real_nonmember"]
    with pytest.raises(ConfigError, match="unknown conditions"):
        experiment.resolve_conditions(["s2l", "contrl"], "lora")
    ti = experiment.method_comparisons("textual_inversion", experiment.COMPARISONS)
    assert ti[experiment.EFFECT] == ("s2l", "real_nonmember") and experiment.VS_REAL_NONMEMBER not in ti
    assert ti[experiment.VS_CROSS_DOMAIN] == ("s2l", "cross_domain")
    lora = experiment.method_comparisons("lora", experiment.COMPARISONS)
    assert lora[experiment.EFFECT] == ("s2l", "cross_domain") and experiment.VS_CROSS_DOMAIN not in lora
    # on cells with both controls, each method's effect is its own control's difference
    rng = np.random.default_rng(0)
    noise, separated = (list(rng.normal(size=30)), list(rng.normal(size=30))), \
        (list(rng.normal(2, 1, 30)), list(rng.normal(0, 1, 30)))
    half = (list(rng.normal(1, 1, 30)), list(rng.normal(0, 1, 30)))
    frames, found = [], []
    for cell, method in (("c0", "lora"), ("c1", "textual_inversion")):
        conditions = {"target": noise, "s2l": separated, "cross_domain": noise, "real_nonmember": half}
        frames.append(_scores(conditions, cell=cell).assign(method=method))
        found.append(_matches({c: [None] * 4 for c in conditions}, cell=cell).assign(method=method))
    summary = experiment.summarize(pd.concat(frames), pd.concat(found), ["method", "comparison", "attack", "metric"],
                                   n_bootstrap=100).set_index(["method", "comparison", "attack", "metric"])
    auc = lambda method, comparison: summary.loc[(method, comparison, "loss", "auc")]
    assert auc("textual_inversion", experiment.EFFECT)["before"] == pytest.approx(
        auc("lora", experiment.VS_REAL_NONMEMBER)["before"]), "textual inversion's reference: the real-non-member model"
    assert auc("lora", experiment.EFFECT)["delta"] == pytest.approx(
        auc("textual_inversion", experiment.VS_CROSS_DOMAIN)["delta"])
    assert auc("textual_inversion", experiment.EFFECT)["delta"] == pytest.approx(
        auc("lora", experiment.VS_REAL_NONMEMBER)["delta"])
    assert auc("textual_inversion", experiment.EFFECT)["delta"] < auc("lora", experiment.EFFECT)["delta"]
