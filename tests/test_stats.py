"""The statistics behind the verdicts: strength, the cluster bootstrap, multiplicity, and the claim rule, on
constructed tables and scores whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from s2l_utils import experiment, report, stats
from s2l_utils.attacks import metrics
from s2l_utils.config import load_profile

BY = ["method", "comparison", "attack", "metric"]


def _cell_scores(cell: str, domain: str, conditions: dict, method: str = "lora", attack: str = "loss") -> pd.DataFrame:
    """One cell's scores: condition -> (member scores, non-member scores), the same file names throughout."""
    frames = []
    for condition, (members, nonmembers) in conditions.items():
        frames.append(pd.DataFrame({
            "cell": cell, "method": method, "domain": domain, "seed": 0, "condition": condition, "attack": attack,
            "file_name": [f"{domain}-m{i}" for i in range(len(members))]
            + [f"{domain}-n{i}" for i in range(len(nonmembers))],
            "is_member": [True] * len(members) + [False] * len(nonmembers), "score": [*members, *nonmembers]}))
    return pd.concat(frames, ignore_index=True)


def _cell_matches(cell: str, domain: str, own_copies: dict, generations: int = 8, method: str = "lora") -> pd.DataFrame:
    """condition -> how many of the ``generations`` copy the domain's own member m0 (at distance 0; the others
    lie at 0.5 from it)."""
    return pd.concat([pd.DataFrame({"cell": cell, "method": method, "domain": domain, "seed": 0,
                                    "condition": condition, "generation": range(generations),
                                    "extracted": np.arange(generations) < copies, "nearest_domain": domain,
                                    "nearest_file": f"{domain}-m0", "nearest_duplicates": 1, "own_classes": "1",
                                    "distance": np.where(np.arange(generations) < copies, 0.0, 0.5),
                                    "own_distance": np.where(np.arange(generations) < copies, 0.0, 0.5)})
                      for condition, copies in own_copies.items()], ignore_index=True)


def _summary_row(method, attack, delta, p, verdict, metric=stats.STRENGTH, comparison=report.EFFECT):
    return {"method": method, "comparison": comparison, "attack": attack, "metric": metric, "delta": delta,
            "lo": delta - 0.02, "hi": delta + 0.02, "p": p, "p_adjusted": p, "verdict": verdict, "correction": "holm",
            "cells": 3, "domains": 3, "draws": 2000, "before": 0.7, "after": 0.7 + delta}


def test_holm_and_benjamini_hochberg_match_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4). Holm: 4x, 3x, 2x, 1x, then running max: .02 .03 .06 .06
    np.testing.assert_allclose(stats.adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02, np.nan])
    # BH: p x m / rank = .02 .02 .04 .04, then running min from the top
    np.testing.assert_allclose(stats.adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02, np.nan])
    assert stats.adjust_pvalues([0.6, 0.9], "holm").tolist() == [1.0, 1.0], "capped at 1"
    with pytest.raises(ValueError, match="unknown correction"):
        stats.adjust_pvalues(p, "bonferonni")


def test_judge_corrects_within_a_family_and_never_judges_auc():
    rows = pd.DataFrame({"comparison": "c", "metric": [stats.STRENGTH] * 4 + ["auc"],
                         "value": [0.1, -0.1, 0.05, 0.0, 0.3], "p": [0.001, 0.02, 0.3, 1.0, 0.0001]})
    judged = stats.judge(rows, "holm")
    # Holm over the 4 strength rows: 0.004, 0.06, 0.6, 1 -> only the first survives
    assert judged["verdict"].tolist() == ["up", "no change", "no change", "no change", ""]
    assert judged["p_adjusted"].iloc[1] == pytest.approx(0.06) and np.isnan(judged["p_adjusted"].iloc[4])


def test_two_ups_and_four_downs_is_not_partly_and_ups_at_chance_level_are_not_shown():
    # a PIAN row as `full` gives it: CI above 0 for 2 methods, below 0 for 4; "partly (2 of 8)" would be wrong
    verdicts = ["up"] * 2 + ["down"] * 4 + ["no change"] * 2
    rows = [_summary_row(f"m{i}", "pian", 0.05 if v == "up" else -0.05 if v == "down" else 0.0,
                         0.001 if v != "no change" else 0.5, v) for i, v in enumerate(verdicts)]
    claims = {c["claim"]: c["agrees"] for c in report.verdicts({"main": pd.DataFrame(rows)})}
    pian = next(v for k, v in claims.items() if k.endswith("pian"))
    assert not pian.startswith("partly") and pian.startswith("no: lower for 4 of 8")
    # 40 estimates (8 methods x 5 attacks), one up: chance alone puts 40 x 2.5% = 1 CI above 0
    rows = [_summary_row(f"m{i}", f"a{j}", 0.0, 0.5, "no change") for i in range(8) for j in range(5)]
    rows[0] = _summary_row("m0", "a0", 0.08, 0.001, "up")
    counts = stats.tally(pd.DataFrame(rows))
    assert counts["chance"] == pytest.approx(1.0) and counts["up"] == 1
    assert stats.agreement(counts).startswith("not shown")
    assert stats.agreement({**counts, "up": 2, "raw_up": 2}) == "partly (2 of 40)"
    assert stats.agreement({**counts, "up": 21, "raw_up": 21}) == "yes"
    assert stats.agreement({**counts, "up": 2, "raw_up": 2, "down": 2, "raw_down": 2}).startswith("not shown")
    # an excess of uncorrected ups that no estimate survives the correction with is not shown either
    assert stats.agreement({**counts, "up": 0, "raw_up": 5}).startswith("not shown")


def test_the_report_counts_the_ups_of_token_methods_like_any_other():
    """Token methods have a control whose token trains too (experiment.training_set), so their ups count."""
    rows = [_summary_row("textual_inversion", "loss", 0.09, 0.001, "up"),
            _summary_row("ti_lora", "loss", 0.08, 0.001, "up"), _summary_row("lora", "loss", 0.0, 0.6, "no change"),
            _summary_row("dreambooth", "loss", 0.0, 0.7, "no change")]
    rows += [{**r, "comparison": report.AFTER, "metric": "auc"} for r in rows]
    claims = report.verdicts({"main": pd.DataFrame(rows)})
    loss = claims[0]
    assert loss["agrees"] == "partly (2 of 4)"
    assert "confounded" not in loss["measured"]
    text = report.markdown({"main": pd.DataFrame(rows)}, "mini", pd.DataFrame(), None, [])
    assert "Holm" in text and "chance (2.5% of the estimates each way" in text and "|AUC − 0.5|" in text


def test_an_inverted_attack_moving_towards_one_half_is_weaker_not_stronger():
    """SecMI on `full`: AUC 0.19 under the control, 0.25 after S2L. AUC rises; the attack gets weaker."""
    rng = np.random.default_rng(0)
    frames = []
    for d, domain in enumerate(["A", "B", "C"]):
        members, nonmembers = rng.normal(-1.3, 1, 40), rng.normal(0, 1, 40)
        frames.append(_cell_scores(f"c{d}", domain, {"target": (members, nonmembers),
                                                      "cross_domain": (members, nonmembers),
                                                      "s2l": (members + 0.8, nonmembers)}))
    scores = pd.concat(frames, ignore_index=True)
    matches = pd.concat([_cell_matches(f"c{d}", dom, {"target": 0, "cross_domain": 0, "s2l": 0})
                         for d, dom in enumerate(["A", "B", "C"])], ignore_index=True)
    summary = experiment.summarize(scores, matches, BY, n_bootstrap=300).set_index(["comparison", "metric"])
    auc, strength = summary.loc[(report.EFFECT, "auc")], summary.loc[(report.EFFECT, stats.STRENGTH)]
    assert auc["delta"] > 0.1 and auc["lo"] > 0 and auc["verdict"] == "", "AUC is shown, never judged"
    assert strength["delta"] == pytest.approx(-auc["delta"]) and strength["verdict"] == "down"
    claims = report.verdicts({"main": summary.reset_index()})
    assert claims[0]["agrees"].startswith("no: lower for 1 of 1")


def _shifted_domains(shifts: dict, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One cell per domain; S2L raises the loss attack's member scores by the domain's shift."""
    scores, matches = [], []
    for d, (domain, shift) in enumerate(shifts.items()):
        members, nonmembers = rng.normal(0.6, 1, 30), rng.normal(0, 1, 30)
        scores.append(_cell_scores(f"c{d}", domain, {"target": (members, nonmembers),
                                                     "cross_domain": (members, nonmembers),
                                                     "s2l": (members + shift, nonmembers)}))
        matches.append(_cell_matches(f"c{d}", domain, {"target": 0, "cross_domain": 0, "s2l": 0}))
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


def test_a_domain_level_shift_widens_the_cluster_bootstrap_interval():
    rng = np.random.default_rng(1)
    same = _shifted_domains({d: 0.5 for d in "ABCDEF"}, rng)
    rng = np.random.default_rng(1)  # the very same images, only the domains' effects differ
    varied = _shifted_domains(dict(zip("ABCDEF", [1.5, -0.5, 1.2, -0.3, 1.0, 0.1], strict=True)), rng)
    widths = {}
    for name, (scores, matches) in {"same": same, "varied": varied}.items():
        row = experiment.summarize(scores, matches, BY, n_bootstrap=400).set_index(["comparison", "metric"])
        row = row.loc[(report.EFFECT, "auc")]
        assert row["domains"] == 6 and row["cells"] == 6
        widths[name] = row["hi"] - row["lo"]
    assert widths["varied"] > 2 * widths["same"], widths


def test_one_domain_is_the_image_bootstrap_of_its_cell():
    rng = np.random.default_rng(2)
    scores, matches = _shifted_domains({"A": 0.8}, rng)
    _, effects = experiment.results(scores, matches, n_bootstrap=300, seed=5)
    summary = experiment.summarize(scores, matches, BY, n_bootstrap=300, seed=5)
    keys = ["comparison", "attack", "metric"]
    merged = effects.merge(summary, on=keys, suffixes=("_cell", ""))
    np.testing.assert_allclose(merged[["delta", "lo", "hi"]].to_numpy(float),
                               merged[["delta_cell", "lo_cell", "hi_cell"]].to_numpy(float))


def test_zero_copies_give_a_zero_width_interval_at_zero_and_one_copy_in_eight_domains_is_no_down():
    rng = np.random.default_rng(3)
    domains = [f"D{i}" for i in range(8)]
    scores, _ = _shifted_domains({d: 0.0 for d in domains}, rng)
    zero = pd.concat([_cell_matches(f"c{i}", d, {"target": 0, "cross_domain": 0, "s2l": 0})
                      for i, d in enumerate(domains)], ignore_index=True)
    summary = experiment.summarize(scores, zero, BY, n_bootstrap=300).set_index(["comparison", "metric"])
    for metric in stats.EXTRACTION_METRICS:
        for comparison in (report.EFFECT, report.AFTER):
            row = summary.loc[(comparison, metric)]
            assert (row["delta"], row["lo"], row["hi"], row["verdict"]) == (0, 0, 0, "no change")
    # a hypernetwork row as `full` gives it: the target copied once in one of 24 cells, S2L never; not a "down"
    one = zero.copy()
    one.loc[(one["cell"] == "c0") & (one["condition"] == "target") & (one["generation"] == 0), "extracted"] = True
    row = experiment.summarize(scores, one, BY, n_bootstrap=300).set_index(["comparison", "metric"])
    row = row.loc[(report.AFTER, "own_copies")]
    assert row["delta"] == pytest.approx(-1 / 8) and row["hi"] == 0 and row["verdict"] == "no change"


def test_every_interval_stays_inside_its_metrics_range():
    rng = np.random.default_rng(4)
    frames, matches = [], []
    for d, domain in enumerate("ABC"):  # nearly perfect separation: TPR at 0 FP near 1
        members, nonmembers = rng.normal(4, 1, 16), rng.normal(0, 1, 8)
        frames.append(_cell_scores(f"c{d}", domain, {"target": (members - 3, nonmembers),
                                                     "cross_domain": (members - 3, nonmembers),
                                                     "s2l": (members, nonmembers)}))
        matches.append(_cell_matches(f"c{d}", domain, {"target": 1, "cross_domain": 2, "s2l": 8}))
    scores, matches = pd.concat(frames, ignore_index=True), pd.concat(matches, ignore_index=True)
    cell_metrics, _ = experiment.results(scores, matches, n_bootstrap=300)
    rates = cell_metrics[cell_metrics["attack"] != stats.EXTRACTION].dropna(subset=["value"])
    assert rates["lo"].between(0, 1).all() and rates["hi"].between(0, 1).all()
    assert set(cell_metrics.loc[cell_metrics["metric"] == "tpr@1%fpr", "value"].isna()) == {True}, "8 non-members"
    summary = experiment.summarize(scores, matches, BY, n_bootstrap=300)
    membership = summary[summary["attack"] != stats.EXTRACTION].dropna(subset=["delta"])
    assert membership["lo"].between(-1, 1).all() and membership["hi"].between(-1, 1).all()
    assert (summary.loc[summary["metric"] == "own_distinct", ["lo", "hi"]].abs() <= 1).all().all(), "one member"
    tpr = summary.set_index(["comparison", "metric"]).loc[(report.EFFECT, "tpr@0fp")]
    assert tpr["hi"] <= 1 and tpr["delta"] > 0.5


def test_cells_must_score_the_same_images_to_be_paired():
    scores = pd.concat([_cell_scores("c0", "A", {"target": ([1, 2], [0])}),
                        _cell_scores("c1", "A", {"target": ([1, 2, 3], [0])})], ignore_index=True)
    matches = pd.concat([_cell_matches("c0", "A", {"target": 0}), _cell_matches("c1", "A", {"target": 0})])
    with pytest.raises(ValueError, match="same scored images"):
        stats.cell_estimates(scores, matches, 10)


def test_prior_knowledge_is_read_in_the_levels_order_and_one_domain_is_named():
    main = pd.DataFrame([_summary_row("lora", "loss", 0.0, 0.5, "no change")])
    deltas = {"captions": 0.09, "name": 0.06, "class": 0.03, "noise": 0.01}  # listed in reverse order
    ablations = pd.DataFrame([{**_summary_row("lora", "loss", d, 0.001, "up"), "ablation": "sp_level",
                               "sp_level": level} for level, d in deltas.items()])
    claim = next(c for c in report.verdicts({"main": main, "ablations": ablations}) if "prior knowledge" in c["claim"])
    assert claim["measured"].index("noise") < claim["measured"].index("captions")
    assert claim["agrees"] == "yes", "rising from noise to captions, with the top level up"
    flat = ablations.assign(delta=[-0.013, -0.011, 0.0, -0.013], p=0.5, verdict="no change")
    claim = next(c for c in report.verdicts({"main": main, "ablations": flat}) if "prior knowledge" in c["claim"])
    assert claim["agrees"] == "not shown", "no trend and every change within noise is not a refutation"
    assert "one attacked domain" not in report.markdown({"main": main}, "mini", pd.DataFrame(), None, [])
    one_domain = main.assign(domains=1, cells=1)
    text = report.markdown({"main": one_domain}, "mini", pd.DataFrame(), None, [])
    assert "one attacked domain" in text and "this one SP set" in text
    seeds = report.markdown({"main": main.assign(domains=1, cells=3)}, "mini", pd.DataFrame(), None, [])
    assert "seeds' cells are averaged, not resampled" in seeds and "this one SP set" not in seeds


def test_the_rule_warns_when_too_few_draws_leave_holm_no_slack():
    family = pd.DataFrame([_summary_row(f"m{i}", f"a{j}", 0.0, 0.5, "no change") for i in range(8) for j in range(5)])
    warned = report.markdown({"main": family.assign(draws=2000)}, "full", pd.DataFrame(), None, [])
    assert "raise n_bootstrap" in warned, "2000 draws: 2/2001 passes 0.05/40 only with no stray draw"
    fine = report.markdown({"main": family.assign(draws=20000)}, "full", pd.DataFrame(), None, [])
    assert "raise n_bootstrap" not in fine


def _class_matches(cell: str, condition: str, nearest: list, domain: str = "A") -> pd.DataFrame:
    """One model's matches: per generation (file, its domain, its duplicates, distance, own distance); a
    distance of 0 is a copy. Domain A's training images come in the classes 1x, 8x and 32x."""
    file, owner, duplicates, distance, own_distance = zip(*nearest, strict=True)
    return pd.DataFrame({"cell": cell, "method": "lora", "domain": domain, "seed": 0, "condition": condition,
                         "generation": range(len(nearest)), "nearest_file": file, "nearest_domain": owner,
                         "nearest_duplicates": duplicates, "distance": distance, "own_distance": own_distance,
                         "extracted": np.array(distance) == 0, "own_classes": "1,8,32"})


def test_extraction_per_duplication_class_and_drift_are_right_and_paired():
    # the target copies the 32x member twice and an 8x member once, and one generation is nearest to domain B
    target = [("m32", "A", 32, 0.0, 0.0), ("m32", "A", 32, 0.0, 0.0), ("m8", "A", 8, 0.0, 0.0),
              ("b1", "B", 1, 0.3, 0.5), ("m1", "A", 1, 0.4, 0.4), ("m1", "A", 1, 0.6, 0.6)]
    # after S2L nothing is copied, everything moved away and two generations look most like B
    s2l = [("m32", "A", 32, 0.5, 0.5), ("b1", "B", 1, 0.5, 0.7), ("m8", "A", 8, 0.6, 0.6),
           ("b2", "B", 1, 0.7, 0.8), ("m1", "A", 1, 0.8, 0.8), ("m1", "A", 1, 0.9, 0.9)]
    matches = pd.concat([_class_matches("c0", "target", target), _class_matches("c0", "s2l", s2l),
                         _class_matches("c0", "cross_domain", s2l)], ignore_index=True)
    scores = _cell_scores("c0", "A", {c: ([1.0, 2.0], [0.0, 0.5]) for c in ("target", "s2l", "cross_domain")})
    estimates = stats.cell_estimates(scores, matches, n_bootstrap=200)
    rows = estimates.rows[estimates.rows["attack"] == stats.EXTRACTION]
    value = rows.set_index(["condition", "metric"])["value"]
    expected = {"own_copies": 3, "own_distinct": 2, "other_copies": 0, "own_copies_32x": 2, "own_distinct_32x": 1,
                "own_copies_8x": 1, "own_distinct_8x": 1, "own_copies_1x": 0, "own_distinct_1x": 0,
                "nearest_median": 0.15, "nearest_q10": 0.0, "nearest_q90": 0.5, "own_nearest_median": 0.2,
                "identity_accuracy": 5 / 6}
    assert value["target"].to_dict() == pytest.approx(expected)
    assert value["s2l"][["own_copies_32x", "own_copies_1x", "identity_accuracy"]].tolist() == \
        pytest.approx([0, 0, 4 / 6])
    assert value["s2l"][["nearest_median", "nearest_q10", "own_nearest_median"]].tolist() == \
        pytest.approx([0.65, 0.5, 0.75])  # sorted distances .5 .5 .6 .7 .8 .9, own .5 .6 .7 .8 .8 .9
    assert rows.groupby("condition")["metric"].apply(tuple).nunique() == 1, "every condition has the same rows"
    # identical models give a zero-width effect in every metric: the draws resample the same generation indices
    summary = experiment.summarize(scores, matches, BY, n_bootstrap=200).set_index(["comparison", "metric"])
    effect = summary.loc[report.EFFECT].loc[list(expected)]
    assert (effect[["delta", "lo", "hi"]] == 0).all().all()
    after = summary.loc[report.AFTER]
    assert after.loc["nearest_median", "delta"] == pytest.approx(0.5) and after.loc["nearest_median", "lo"] > 0
    assert after.loc["own_copies_32x", "verdict"] == "no change" and after.loc["nearest_q10", "verdict"] == ""
    assert after.loc["own_distinct_32x", "verdict"] == "" and after.loc["identity_accuracy", "verdict"] != ""


def test_every_cell_of_a_domain_gets_the_classes_its_matches_list_and_old_matches_are_refused():
    copies = _class_matches("c0", "target", [("m8", "A", 8, 0.0, 0.0), ("m1", "A", 1, 0.5, 0.5)])
    none = _class_matches("c1", "target", [("m1", "A", 1, 0.5, 0.5), ("m1", "A", 1, 0.6, 0.6)])
    scores = pd.concat([_cell_scores(c, "A", {"target": ([1.0], [0.0])}) for c in ("c0", "c1")], ignore_index=True)
    rows = stats.cell_estimates(scores, pd.concat([copies, none], ignore_index=True), 20).rows
    per_cell = rows[rows["attack"] == stats.EXTRACTION].groupby("cell")["metric"].apply(set)
    assert per_cell["c0"] == per_cell["c1"] and {"own_copies_32x", "own_distinct_32x"} <= per_cell["c1"], \
        "a class nobody copied still has its row"
    for column in ("own_classes", "own_distance", "nearest_duplicates"):
        with pytest.raises(ValueError, match=column):
            stats.cell_estimates(scores, copies.drop(columns=column), 20)


def test_resampled_quantiles_are_numpys_quantiles_of_the_resamples():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 5, (3, 9)).astype(float)  # ties
    counts = metrics.bootstrap_counts(rng, 9, 40)
    got = stats.resampled_quantiles(values, counts, [0.1, 0.5, 0.9])
    for draw in range(40):
        expected = np.quantile(np.repeat(values, counts[draw], axis=1), [0.1, 0.5, 0.9], axis=1)
        np.testing.assert_allclose(got[:, :, draw], expected)


def test_at_the_cell_budget_the_expected_count_of_a_one_percent_copier_excludes_zero():
    """``main_extraction_samples``: the generation bootstrap's lower 2.5% bound of k copies among n is 0 while
    (1 - k/n)^n >= 2.5% (the share of resamples that draw none of them): 1% copies need n >= 400 (4 copies:
    0.99^400 = 1.8%); at 64 generations one copy (1.6%) leaves 0 in 37% of the draws."""
    mini = load_profile("mini")
    scores = _cell_scores("c0", "A", {"target": ([1.0, 2.0], [0.0, 0.5])})
    for generations, copies, excludes_zero in ((mini.main_extraction_samples, mini.main_extraction_samples // 100,
                                                True), (64, 1, False)):
        matches = _cell_matches("c0", "A", {"target": copies}, generations=generations)
        estimates = stats.cell_estimates(scores, matches, mini.n_bootstrap)
        row = stats.combine(estimates, ["condition", "attack", "metric"]).set_index("metric").loc["own_copies"]
        assert row["value"] == copies and (row["lo"] > 0) == excludes_zero, (generations, row.to_dict())
    assert mini.main_extraction_samples >= 400


def test_per_class_copies_and_the_drift_metrics_are_each_one_multiplicity_family():
    """Splitting copies by duplication class (or describing drift three ways) must not multiply the chances of a
    spurious verdict: Holm runs over every class x method together, and over the three drift metrics together."""
    rows = [{"comparison": "effect", "method": m, "metric": f"own_copies_{k}x", "value": 1.0, "p": 0.02}
            for m in ("lora", "textual_inversion") for k in (32, 16, 1)]
    rows += [{"comparison": "effect", "method": m, "metric": name, "value": 0.1, "p": 0.02}
             for m in ("lora", "textual_inversion") for name in ("nearest_median", "own_nearest_median",
                                                                  "identity_accuracy")]
    rows += [{"comparison": "effect", "method": m, "metric": "own_copies", "value": 1.0, "p": 0.02}
             for m in ("lora", "textual_inversion")]
    judged = stats.judge(pd.DataFrame(rows)).set_index(["method", "metric"])
    assert judged.loc[("lora", "own_copies_32x"), "p_adjusted"] == pytest.approx(6 * 0.02)  # 6 tests, not 2
    assert judged.loc[("lora", "identity_accuracy"), "p_adjusted"] == pytest.approx(6 * 0.02)
    assert judged.loc[("lora", "own_copies"), "p_adjusted"] == pytest.approx(2 * 0.02)
    assert set(judged["verdict"]) == {"no change", "up"}
    assert (judged.xs("own_copies", level="metric")["verdict"] == "up").all()
    assert stats.verdict_family("own_copies_4x") == stats.PER_CLASS_FAMILY
    assert stats.verdict_family("advantage") == "advantage"
