"""The regime study (``s2l_utils.regimes``) on constructed cells whose answers are planted: contrasts between
settings, the pre-registered verdicts and their wording, the figure, the world keys and their labels, publishing
only finished shards, and writing the results (nothing outside the run folder without ``publish``)."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from s2l_utils import config, experiment, notebook, paths, plots, regimes, stats
from s2l_utils.config import ConfigError
from s2l_utils.regimes import analysis, hypotheses, render, shards, worlds
from s2l_utils.regimes.__main__ import main
from s2l_utils.regimes.worlds import DATA, DUPLICATED, GRID, IID, TARGET, WIDE

DOMAINS = [f"D{i}" for i in range(6)]
GENERATIONS = 40
COMMITTED = paths.repo_root() / "data" / "results" / "regimes"


def _model(rng, cell, label, condition, *, member_shift, copies, distance, classes):
    """One model's scores (loss attack; the target also the blind baseline, whose members score 3 x the
    non-member shift above non-members) and matches: members score ``member_shift`` above non-members; the first
    ``copies`` generations copy the domain's 32x member, the rest lie at ``distance``."""
    domain = label["domain"]
    files = [f"{domain}-m{i}" for i in range(8)] + [f"{domain}-n{i}" for i in range(8)]
    member = np.arange(16) < 8
    attacks = ["loss", "blind"] if condition == experiment.BEFORE else ["loss"]
    scores = pd.concat([pd.DataFrame({"cell": cell, **label, "condition": condition, "attack": attack,
                                      "file_name": files, "is_member": member,
                                      "score": rng.normal(size=16) + member * (
                                          member_shift if attack == "loss" else 3 * label["nonmember_shift"])})
                        for attack in attacks], ignore_index=True)
    copied = np.arange(GENERATIONS) < copies
    matches = pd.DataFrame({"cell": cell, **label, "condition": condition, "generation": range(GENERATIONS),
                            "extracted": copied, "nearest_domain": domain,
                            "nearest_file": np.where(copied, f"{domain}-m0", f"{domain}-m5"),
                            "nearest_duplicates": np.where(copied, 32 if classes != "1" else 1, 1),
                            "own_classes": classes, "distance": np.where(copied, 0.0, distance),
                            "own_distance": np.where(copied, 0.0, distance)})
    return scores, matches


def _grid(seed=0, shifts=(0.0,), planted=True):
    """Two worlds (the grid's target) x guidance 1 / 7.5 x LoRA and textual inversion x 6 domains (x non-member
    ``shifts``). Planted: in the duplicated world at g = 1, S2L copies the 32x member 12 times in 40 (target and
    controls 2) and strengthens the loss attack; at g = 7.5 it copies nothing and its generations lie 0.3 further
    away; the i.i.d. world copies nothing. With shifted non-members, S2L at g = 7.5 separates members far more than
    its control, so S2L's effect rises with the shift there and only there. Without ``planted``, S2L is its
    control. Two seeds per domain."""
    rng = np.random.default_rng(seed)
    scores, matches = [], []
    for data, shift, g in itertools.product((DUPLICATED, IID), shifts, (1.0, 7.5)):
        duplicated = data == DUPLICATED
        for method, domain, seed_ in itertools.product(("lora", "textual_inversion"), DOMAINS, (0, 1)):
            label = {"method": method, "domain": domain, "seed": seed_, DATA: data, TARGET: GRID,
                     "nonmember_shift": shift, "sp_guidance": g}
            cell = f"{data}-{shift}-{g}-{method}-{domain}-{seed_}"
            base = dict(member_shift=1.0, copies=2 * duplicated, distance=0.5, classes="1,32" if duplicated else "1")
            s2l = dict(base, member_shift=3.0 if g == 1 else 1.0 + 10 * shift,
                       copies=(12 if g == 1 else 0) * duplicated, distance=0.5 if g == 1 else 0.8)
            s2l = s2l if planted else base
            for condition, kind in ((experiment.BEFORE, base), ("s2l", s2l), (experiment.control_of(method), base)):
                s, m = _model(rng, cell, label, condition, **kind)
                scores.append(s)
                matches.append(m)
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


@pytest.fixture(scope="module")
def analysed():
    scores, matches = _grid()
    effects = analysis.effects(scores, matches, n_bootstrap=1000)
    return scores, effects, analysis.summary(effects), analysis.contrasts(effects, "sp_guidance", 7.5, 1.0)


def test_a_contrast_is_the_difference_of_paired_rows_and_of_their_draws():
    rows = pd.DataFrame({"domain": ["A", "A", "B", "B"], "g": [1, 7, 1, 7], "metric": "m", "value": [1., 4., 2., 2.]})
    draws = np.array([[1., 2.], [5., 3.], [2., 2.], [1., 1.]])
    out = stats.contrast(stats.Estimates(rows, draws), "g", 7, 1, ["domain", "metric"])
    assert out.rows["value"].tolist() == [3.0, 0.0] and out.rows["g"].tolist() == ["7 - 1"] * 2
    assert out.draws.tolist() == [[4.0, 1.0], [-1.0, -1.0]]
    with pytest.raises(ValueError, match="domain"):
        stats.contrast(stats.Estimates(rows, draws), "g", 7, 1, ["metric"])
    with pytest.raises(ValueError, match="one row per setting"):
        stats.contrast(stats.Estimates(pd.concat([rows, rows]), np.vstack([draws, draws])), "g", 7, 1,
                       ["domain", "metric"])


def test_the_planted_effects_come_out_per_regime_with_token_methods_bracketed(analysed):
    _, _, summary, _ = analysed
    heaviest = summary[(summary["metric"] == analysis.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)]
    at = heaviest.set_index([DATA, "sp_guidance", "method"])["delta"]
    assert at[DUPLICATED, 1.0, "lora"] == pytest.approx(10) and at[DUPLICATED, 7.5, "lora"] == -2
    assert IID not in heaviest[DATA].tolist(), "the i.i.d. world has no 32x class"
    bracket = analysis.bracketed(summary[(summary["attack"] == stats.EXTRACTION)
                                         & (summary["metric"] == analysis.HEAVIEST)]).set_index(["sp_guidance",
                                                                                                  "method"])
    assert bracket.loc[(1.0, "lora"), "verdict"] == "up" and bracket.loc[(1.0, "textual_inversion"), "verdict"] == "up"
    assert np.isnan(bracket.loc[(1.0, "lora"), "after_delta"])
    assert bracket.loc[(7.5, "textual_inversion"), "after_delta"] == pytest.approx(-2)


def test_the_guidance_contrast_is_paired_and_pooled_over_methods(analysed):
    _, _, _, guidance = analysed
    drift = guidance[(guidance["metric"] == "nearest_median") & (guidance["comparison"] == experiment.EFFECT)
                     & (guidance[DATA] == DUPLICATED)].set_index("method")
    # s2l moved 0.3 away at 7.5 and not at 1, its control never; a draw that picks many of g = 1's copies
    # lowers g = 1's median, never 7.5's (no copies): the paired contrast is 0.3 and never below it
    pooled = drift.loc[experiment.ALL_METHODS]
    assert pooled["delta"] == pytest.approx(0.3) and pooled["lo"] == pytest.approx(0.3) and pooled["hi"] > 0.3
    # per method, over both methods, and over the weight methods only (LoRA here): each cell is a domain x seed
    assert drift["cells"].to_dict() == {"lora": 12, "textual_inversion": 12, experiment.ALL_METHODS: 24,
                                        analysis.WEIGHT_METHODS: 12}
    assert (drift["domains"] == 6).all()
    assert set(guidance["contrast"]) == {"sp_guidance 7.5 - 1.0"}


def test_only_the_contrasts_whose_settings_are_published_are_taken(analysed):
    _, effects, _, guidance = analysed  # guidance 1 and 7.5, no shifted non-members, no wider target
    taken = analysis.setting_contrasts(effects)
    assert list(taken) == [analysis.GUIDANCE, analysis.SHIFT, analysis.CAPACITY]
    pd.testing.assert_frame_equal(taken[analysis.GUIDANCE], guidance)
    assert taken[analysis.SHIFT].empty and taken[analysis.CAPACITY].empty


def test_the_pool_over_all_methods_takes_only_comparisons_every_method_has(analysed):
    # a named control that is a method's own is folded into its S2L effect, so a named comparison can exist for
    # some methods only (here "S2L - real non-member" for LoRA alone): pooling it would pool LoRA under "all"
    _, effects, _, _ = analysed
    lora = (effects.rows["method"] == "lora") & (effects.rows["comparison"] == experiment.EFFECT)
    named = effects.rows[lora].assign(comparison=experiment.VS_REAL_NONMEMBER)
    more = stats.Estimates(pd.concat([effects.rows, named], ignore_index=True),
                           np.concatenate([effects.draws, effects.draws[lora.to_numpy()]]))
    table = analysis.contrasts(more, "sp_guidance", 7.5, 1.0, metrics=["nearest_median"])
    methods = table.groupby("comparison")["method"].agg(set)
    assert methods[experiment.EFFECT] == {"lora", "textual_inversion", experiment.ALL_METHODS,
                                          analysis.WEIGHT_METHODS}
    assert methods[experiment.VS_REAL_NONMEMBER] == {"lora", analysis.WEIGHT_METHODS}


def test_each_regime_summary_says_how_many_domains_agree(analysed):
    _, _, summary, _ = analysed
    row = summary[(summary["metric"] == analysis.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)
                  & (summary["sp_guidance"] == 1.0) & (summary["method"] == "lora")].iloc[0]
    assert (row["domains_up"], row["domains_down"]) == (6, 0)  # every domain copies 10 more after S2L
    assert row["p_sign_flip"] == pytest.approx(2 / 64)  # the floor for 6 domains


DRIFT_ONLY = "confirmed (guidance orders the drift; that the drift lowers extraction and MIA is not shown)"


def test_the_hypotheses_follow_their_preregistered_rules(analysed):
    scores, _, summary, guidance = analysed
    h1 = hypotheses.h1_memorisation(summary)
    assert h1.outcome == hypotheses.CONFIRMED and render.verdict_text(h1) == "confirmed"
    assert "g = 1: lora +10.000" in render.evidence(h1)
    assert "The target copies 2.000 32x members per cell" in render.evidence(h1)
    assert h1.basis["copy_rate"] == pytest.approx(2.0) and h1.basis["copying_domains"] == 6
    h2 = hypotheses.h2_drift(summary, guidance)
    # the planted copies (+10 at g = 1, -2 at 7.5) and loss effects fall with guidance: the mechanism shows
    assert h2.outcome == hypotheses.CONFIRMED
    assert render.verdict_text(h2) == (
        "confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on duplicated world: extraction "
        f"{analysis.HEAVIEST}, loss {stats.STRENGTH}; i.i.d. world: loss {stats.STRENGTH})")
    assert "+0.300 [+0.300, +0.300]" in render.evidence(h2)
    assert h2.basis["worlds"][0]["drift"]["delta"] == pytest.approx(0.3)
    # with those contrasts around 0 only the drift's ordering is confirmed
    flat = guidance.copy()
    lowered = (flat["comparison"] == experiment.EFFECT) & (flat["method"] == analysis.WEIGHT_METHODS) & (
        flat["hi"] < 0) & flat["metric"].isin([analysis.HEAVIEST, stats.STRENGTH])
    assert lowered.sum() == 3
    flat.loc[lowered, ["delta", "lo", "hi"]] = [0.0, -0.1, 0.1]
    assert render.verdict_text(hypotheses.h2_drift(summary, flat)) == DRIFT_ONLY
    # without the i.i.d. world H1 cannot be confirmed
    alone = hypotheses.h1_memorisation(summary[summary[DATA] == DUPLICATED])
    assert (alone.outcome, alone.reason) == (hypotheses.NOT_SHOWN, hypotheses.MISSING_IID)
    assert render.verdict_text(alone) == "not shown (i.i.d. world pending)"
    blind = analysis.blind_by_world(scores, n_bootstrap=200)
    assert sorted(blind[DATA]) == sorted([DUPLICATED, IID])
    h3 = hypotheses.h3_shift(summary, blind, pd.DataFrame())
    assert h3.outcome == hypotheses.PENDING and "i.i.d. shift 0" in render.evidence(h3)


def _capacity_grid(wide_distance, wide_copies, seed=0):
    """The duplicated world at SP guidance 3 on the grid's target and on the wider one (``WIDE``), LoRA and
    textual inversion x 6 domains x 2 seeds. Both targets copy their 32x member 2 times in 40 in every domain, and
    so do the controls, whose generations lie at 0.6 (grid) and 0.7 (wider) against the targets' 0.5. On the grid's
    target S2L's generations lie at 0.8 and copy no more; on the wider one LoRA's lie at ``wide_distance`` and copy
    ``wide_copies`` times, while textual inversion's drift far (1.5): pooling it in would change H4's number."""
    rng = np.random.default_rng(seed)
    scores, matches = [], []
    for target, method, domain, seed_ in itertools.product((GRID, WIDE), ("lora", "textual_inversion"), DOMAINS,
                                                           (0, 1)):
        label = {"method": method, "domain": domain, "seed": seed_, DATA: DUPLICATED, TARGET: target,
                 "nonmember_shift": 0.0, "sp_guidance": analysis.H4_GUIDANCE}
        cell = f"{target}-{method}-{domain}-{seed_}"
        base = dict(member_shift=1.0, copies=2, distance=0.5, classes="1,32")
        wide = target == WIDE
        control = dict(base, distance=0.7 if wide else 0.6)
        s2l = dict(base, distance=0.8)
        if wide:
            s2l = dict(base, distance=1.5) if method == "textual_inversion" else \
                dict(base, distance=wide_distance, copies=wide_copies)
        for condition, kind in ((experiment.BEFORE, base), ("s2l", s2l), (experiment.control_of(method), control)):
            s, m = _model(rng, cell, label, condition, **kind)
            scores.append(s)
            matches.append(m)
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


def _h4(wide_distance, wide_copies, **summary_values):
    effects = analysis.effects(*_capacity_grid(wide_distance, wide_copies), n_bootstrap=300)
    summary = analysis.summary(effects).assign(**summary_values)
    return hypotheses.h4_capacity(summary, analysis.capacity_contrast(effects))


def test_h4_compares_the_wider_target_with_the_grids_cell_by_cell():
    # LoRA on the wider target: no drift against its control (0.5 - 0.7 = -0.2, grid: 0.8 - 0.6 = +0.2), 10 more copies
    confirmed = _h4(wide_distance=0.5, wide_copies=12)
    assert confirmed.outcome == hypotheses.CONFIRMED, confirmed
    text = render.evidence(confirmed)
    assert "weight methods (lora), S2L effect on the wider target minus that on the grid's: median nearest " \
           "distance -0.400 [-0.400, -0.400]" in text
    assert "of after − before -0.300" in text  # the other comparison, reported beside it
    assert "32x copies +10.000" in text and "in 6 of 8 domains" in text
    assert "textual_inversion (after - before) nearest_median +0.700" in text
    assert confirmed.basis["drift"]["delta"] == pytest.approx(-0.4) and confirmed.basis["pooled"] == ["lora"]
    assert _h4(wide_distance=1.1, wide_copies=12).outcome == hypotheses.REFUTED  # drifts more on the wider target
    assert _h4(wide_distance=0.5, wide_copies=0).outcome == hypotheses.REFUTED  # drifts less but copies less
    same = _h4(wide_distance=0.9, wide_copies=2)  # the same S2L effect on both
    assert (same.outcome, render.verdict_text(same)) == (hypotheses.NOT_SHOWN, "not shown")
    untestable = _h4(wide_distance=0.5, wide_copies=12, domains_reference=1)  # one copying domain
    assert (untestable.outcome, untestable.reason) == (hypotheses.NOT_SHOWN, hypotheses.FEW_COPYING)
    assert render.verdict_text(untestable).startswith("not shown (drift smaller; copies not testable: the wider "
                                                      "target copies in 1 of 8 domains")
    assert hypotheses.h4_capacity(pd.DataFrame(), pd.DataFrame()).outcome == hypotheses.PENDING


def test_the_capacity_contrast_pairs_each_cell_with_its_twin_on_the_other_target():
    scores, matches = _capacity_grid(0.5, 12)
    grid_scores, grid_matches = (t[t[TARGET] == GRID] for t in (scores, matches))
    twin = [t.assign(**{TARGET: WIDE}, cell=t["cell"] + "-wide") for t in (grid_scores, grid_matches)]
    effects = analysis.effects(pd.concat([grid_scores, twin[0]]), pd.concat([grid_matches, twin[1]]), n_bootstrap=300)
    summary = analysis.summary(effects)
    strength = summary[(summary["metric"] == stats.STRENGTH) & (summary["comparison"] == experiment.EFFECT)]
    assert (strength["hi"] - strength["lo"] > 0.01).all(), "each target's effect is uncertain"
    same = analysis.capacity_contrast(effects)
    assert set(same["contrast"]) == {"world duplicated, UNet 32-64 - duplicated"}  # the committed value
    same = same[same["metric"] == stats.STRENGTH]
    assert len(same) and (same["lo"] == 0).all() and (same["hi"] == 0).all(), "but identical twins differ by 0"
    # the wider target's verdicts are judged in families of their own: the grid's are as without it
    alone = analysis.summary(analysis.effects(grid_scores, grid_matches, n_bootstrap=300))
    pd.testing.assert_frame_equal(summary[summary[TARGET] == GRID].reset_index(drop=True),
                                  alone.reset_index(drop=True))


def test_a_world_is_keyed_by_its_data_and_by_a_target_that_is_not_the_grids():
    assert worlds.world_of({"member_duplicates": [32, 16], "unet_channels": [16, 32]}) == (DUPLICATED, GRID)
    assert worlds.world_of({"member_duplicates": [], "unet_channels": [16, 32]}) == (IID, GRID)
    assert worlds.world_of({"member_duplicates": [32, 16, 8, 4], "unet_channels": [32, 64]}) == (DUPLICATED, WIDE)
    for profile in ("smoke", "mini"):  # each profile's own target is its grid's
        params = {"member_duplicates": [32], "unet_channels": config.load_profile(profile).unet_channels}
        assert worlds.world_of(params) == (DUPLICATED, GRID)
    assert [worlds.label(*keys) for keys in worlds.LABELS] == ["duplicated", "i.i.d.", "duplicated, UNet 32-64"]
    with pytest.raises(ValueError, match="unknown world label"):
        worlds.keys("duplicated, UNet 64-128")
    with pytest.raises(ValueError, match="no label for the world"):
        worlds.label(IID, WIDE)


def test_every_committed_shards_world_label_round_trips_through_its_keys():
    stored = {name: pd.read_parquet(COMMITTED / f"{name}.parquet", columns=[worlds.LABEL])[worlds.LABEL]
              for name in (*shards.SHARDS, *shards.CAPACITY, shards.ZERO_KNOWLEDGE)}
    for name, labels in stored.items():
        for text in labels.unique():
            assert worlds.label(*worlds.keys(text)) == text, name
    assert {worlds.keys(t) for labels in stored.values() for t in labels.unique()} == set(worlds.LABELS)


def test_a_table_keeps_its_columns_in_place_from_labels_to_keys_and_back():
    for name in ("summary", "paper_table", "blind"):
        table = pd.read_csv(COMMITTED / f"{name}.csv", nrows=200)
        keyed = worlds.with_keys(table)
        at = list(table.columns).index(worlds.LABEL)
        assert list(keyed.columns[at:at + 2]) == [DATA, TARGET] and worlds.LABEL not in keyed
        back = worlds.with_labels(keyed)
        assert list(back.columns) == list(table.columns), name
        assert back[worlds.LABEL].tolist() == table[worlds.LABEL].tolist()
    # a contrast between targets has no world of its own: its rows carry no label
    contrast = pd.DataFrame({DATA: [DUPLICATED], "nonmember_shift": [0.0], "delta": [1.0]})
    assert list(worlds.with_labels(contrast).columns) == ["nonmember_shift", "delta"]


def _heaviest_effects(summary, **values):
    rows = (summary["metric"] == analysis.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)
    out = summary.copy()
    for column, value in values.items():
        out.loc[rows, column] = value
    return out


def test_h1_is_refuted_only_below_its_margin_and_needs_a_target_that_copies(analysed):
    _, _, summary, _ = analysed
    below = _heaviest_effects(summary, delta=-0.1, lo=-0.5, hi=0.2, verdict="no change")
    refuted = hypotheses.h1_memorisation(below)
    assert refuted.outcome == hypotheses.REFUTED and "Every CI lies below +0.25" in render.evidence(refuted)
    wide = _heaviest_effects(summary, delta=-0.1, lo=-0.5, hi=0.3, verdict="no change")  # a CI reaching +0.3
    assert hypotheses.h1_memorisation(wide).outcome == hypotheses.NOT_SHOWN
    assert analysis.copying_domains(summary) == 6
    one_copier = summary.assign(domains_reference=1)  # one copying domain: every copies CI reaches 0
    untestable = hypotheses.h1_memorisation(one_copier)
    assert (untestable.outcome, untestable.reason) == (hypotheses.NOT_TESTABLE, hypotheses.FEW_COPYING)
    assert render.verdict_text(untestable) == "not testable (the target copies in 1 of 8 domains; a verdict needs 3)"


def test_h2_reads_a_ci_around_zero_under_both_rules_and_checks_that_s2l_is_not_smaller_at_g1(analysed):
    _, effects, summary, guidance = analysed
    assert hypotheses.h2_drift(summary, analysis.contrasts(effects, "sp_guidance", 1.0, 7.5)).outcome == \
        hypotheses.REFUTED
    drift = (guidance["metric"] == "nearest_median") & (guidance["comparison"] == experiment.EFFECT)
    around = guidance.copy()
    around.loc[drift, ["lo", "hi"]] = [-0.1, 0.1]
    around_zero = hypotheses.h2_drift(summary, around)
    assert around_zero.outcome == hypotheses.AROUND_ZERO
    assert render.verdict_text(around_zero) == "refuted by its own rule (CI around 0); not shown by the shared rule"
    larger_at_75 = guidance.copy()
    copies = (guidance["metric"] == analysis.HEAVIEST) & (guidance["comparison"] == experiment.EFFECT)
    larger_at_75.loc[copies, ["delta", "lo", "hi"]] = [1.0, 0.5, 1.5]
    duplicated = larger_at_75[larger_at_75[DATA] == DUPLICATED]  # (the i.i.d. world has no 32x class)
    assert render.verdict_text(hypotheses.h2_drift(summary, duplicated)).startswith("not shown (drift ordered")
    disagree = hypotheses.h2_drift(summary, larger_at_75)
    assert (disagree.reason, render.verdict_text(disagree)) == (hypotheses.WORLDS_DISAGREE,
                                                                "not shown (the worlds disagree)")
    # where the target copies in too few domains the copies term is not judged (every CI reaches 0 by construction)
    one_copier = summary.assign(domains_reference=1)
    h2 = hypotheses.h2_drift(one_copier, duplicated)
    # (so the mechanism it names rests on the loss attack alone: the copies, lower at 7.5, are not judged)
    assert render.verdict_text(h2) == ("confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on "
                                       f"duplicated world: loss {stats.STRENGTH})")
    assert "not judged: too few copying domains" in render.evidence(h2)


def test_the_shift_hypothesis_pairs_each_cell_with_its_iid_twin():
    scores, matches = _grid(shifts=(0.0, 0.5))
    effects = analysis.effects(scores, matches, n_bootstrap=1000)
    summary = analysis.summary(effects)
    shift = analysis.contrasts(effects, "nonmember_shift", 0.5, 0.0)
    loss = shift[(shift["attack"] == "loss") & (shift["metric"] == stats.STRENGTH)
                 & (shift["comparison"] == experiment.EFFECT) & (shift["method"] == experiment.ALL_METHODS)]
    at = loss.set_index([DATA, "sp_guidance"])
    assert at.loc[(DUPLICATED, 7.5), "lo"] > 0
    assert at.loc[(DUPLICATED, 1.0), "lo"] < 0 < at.loc[(DUPLICATED, 1.0), "hi"]
    blind = analysis.blind_by_world(scores, n_bootstrap=200).set_index([DATA, TARGET, "nonmember_shift"])
    assert (blind.xs(0.5, level=2)["lo"] > 0.5).all() and (blind.xs(0.0, level=2)["lo"] < 0.5).all()
    blind = blind.reset_index()
    h3 = hypotheses.h3_shift(summary, blind, shift)
    # S2L at g = 7.5 separates members far better than its control only with shifted non-members
    assert h3.outcome == hypotheses.CONFIRMED and "g = 7.5 lora loss" in render.evidence(h3)
    assert render.verdict_text(h3) == "confirmed"
    assert hypotheses.h3_shift(summary, blind, shift.assign(lo=-1.0, hi=1.0)).outcome == hypotheses.AROUND_ZERO
    # an "up" that the i.i.d. twin shares, or a blind baseline that sees no shift, does not confirm
    both_up = summary.copy()
    both_up.loc[both_up["metric"] == stats.STRENGTH, "verdict"] = "up"
    assert hypotheses.h3_shift(both_up, blind, shift).outcome == hypotheses.NOT_SHOWN
    assert hypotheses.h3_shift(summary, blind.assign(lo=0.4), shift).outcome == hypotheses.NOT_SHOWN
    # S2L - real non-member is judged on its own (weight methods; a token method's is an end of its own bracket):
    # with every own-control effect "no change", it alone confirms, and the verdict says so
    def as_real_nonmember(table):
        return table[table["comparison"] == experiment.EFFECT].assign(comparison=experiment.VS_REAL_NONMEMBER)

    flat_own = summary.assign(verdict=summary["verdict"].where(summary["comparison"] != experiment.EFFECT,
                                                               "no change"))
    h3 = hypotheses.h3_shift(pd.concat([flat_own, as_real_nonmember(summary)]), blind,
                             pd.concat([shift, as_real_nonmember(shift)]))
    assert h3.basis["confirming"] == [experiment.VS_REAL_NONMEMBER]
    assert render.verdict_text(h3) == ("confirmed (against the real-non-member control; not shown against each "
                                       "method's own control)")
    own, real = render.evidence(h3).split("against the real-non-member control: ")
    assert "against each method's own control: 0 of" in own and "g = 7.5 lora loss" in real
    assert "textual_inversion" not in real
    assert experiment.ALL_METHODS not in real and analysis.WEIGHT_METHODS not in real, "pooled rows are no method"
    no_mia = summary[summary["metric"] != stats.STRENGTH]
    assert hypotheses.h3_shift(no_mia, blind, shift).outcome == hypotheses.PENDING, "nothing judged: no verdict"


def test_nothing_is_confirmed_when_s2l_is_its_control():
    scores, matches = _grid(shifts=(0.0, 0.5), planted=False)
    effects = analysis.effects(scores, matches, n_bootstrap=1000)
    summary = analysis.summary(effects)
    verdicts = [hypotheses.h1_memorisation(summary),
                hypotheses.h2_drift(summary, analysis.contrasts(effects, "sp_guidance", 7.5, 1.0)),
                hypotheses.h3_shift(summary, analysis.blind_by_world(scores, 200),
                                    analysis.contrasts(effects, "nonmember_shift", 0.5, 0.0))]
    assert len(verdicts) == 3 and not any(v.outcome == hypotheses.CONFIRMED for v in verdicts)
    assert verdicts[0].outcome == hypotheses.REFUTED  # S2L equals its control: no copies gained, CIs at 0


def test_the_zero_knowledge_shake_judges_each_family_against_the_target(analysed):
    _, _, summary, _ = analysed
    shaken = summary[(summary[DATA] == DUPLICATED) & (summary["sp_guidance"] == 1.0)]
    verdict = hypotheses.zero_knowledge(shaken)
    assert render.verdict_text(verdict) == "MIA strength: yes; 32x copies: yes"
    assert "exploratory" in render.hypotheses_table([verdict])["hypothesis"].iloc[0]
    assert "lora 32x copies +10.000" in render.evidence(verdict)
    assert verdict.basis["tallies"][analysis.HEAVIEST]["up"] == 2


def test_too_few_draws_mark_every_judged_verdict_and_only_those(analysed):
    _, _, summary, _ = analysed
    judged = hypotheses.h1_memorisation(summary)
    pending = hypotheses.h4_capacity(summary, pd.DataFrame())
    not_run = hypotheses.not_run(hypotheses.ZERO_KNOWLEDGE_SHAKE)
    assert hypotheses.with_draws([judged, pending, not_run], 10_000, 240) == [judged, pending, not_run]
    marked, still_pending, still_not_run = hypotheses.with_draws([judged, pending, not_run], 50, 240)
    assert marked.too_few_draws == (50, 240) and still_pending is pending and still_not_run is not_run
    table = render.hypotheses_table([marked, still_pending, still_not_run])
    assert table["verdict"].tolist() == ["confirmed (too few draws: 50 < 240)", "pending", "not run"]
    assert table["hypothesis"].tolist() == ["H1 memorisation", "H4 capacity", "zero-knowledge shake (exploratory)"]
    assert table["evidence"].iloc[0] == render.evidence(judged) and table["evidence"].iloc[2] == "shard pending"


def test_the_draws_needed_let_the_largest_family_pass_holm():
    table = pd.DataFrame({"comparison": ["e"] * 5, "metric": ["advantage"] * 3 + ["nearest_median", "auc"],
                          "p_adjusted": [0.1, 0.2, 0.3, 0.4, np.nan]})
    assert analysis.draws_needed(table) == 120  # 3 verdicts: 2 / (draws + 1) < 0.05 / 3
    # rows of the wider target are judged in families of their own: they do not enlarge the grid's
    grid = table.assign(**{DATA: DUPLICATED, TARGET: GRID})
    assert analysis.draws_needed(pd.concat([grid, grid.assign(**{TARGET: WIDE})])) == 120
    assert analysis.draws_needed(pd.concat([grid, grid.assign(**{DATA: IID})])) == 240


def test_the_regime_figure_has_a_row_per_world_and_a_column_per_panel(analysed):
    _, _, summary, _ = analysed
    panels = render.figure_panels(summary)
    assert len(panels) == 3 and all(set(p["regime"]) == {"duplicated, shift 0", "i.i.d., shift 0"}
                                    for p in panels.values())
    fig = plots.regime_grid(panels)
    assert fig.axes[0].get_title().startswith("MIA loss") and len(fig.axes) == 2 * 3
    # a token method's marker is filled only when both ends of its bracket agree
    after_flat = summary.copy()
    token_after = (after_flat["method"] == "textual_inversion") & (after_flat["comparison"] == experiment.AFTER)
    after_flat.loc[token_after, "verdict"] = "no change"
    copies = next(p for title, p in render.figure_panels(after_flat).items() if "copies" in title)
    at = copies[copies["regime"] == "duplicated, shift 0"].set_index(["x", "method"])["verdict"]
    assert (at[1.0, "lora"], at[1.0, "textual_inversion"]) == ("up", "no change")


def _header(name: str) -> list[str]:
    return pd.read_csv(COMMITTED / f"{name}.csv", nrows=0).columns.tolist()


@pytest.fixture(scope="module")
def judged_study():
    """The whole study on the planted grid with shifted non-members and H4's wider target beside it."""
    grid, capacity = _grid(shifts=(0.0, 0.5)), _capacity_grid(0.5, 12)
    capacity = [t.assign(cell=t["cell"] + "-h4") for t in capacity]
    scores, matches = (pd.concat([a, b], ignore_index=True) for a, b in zip(grid, capacity, strict=True))
    return regimes.judge(scores, matches, n_bootstrap=60, zero_knowledge=_grid(shifts=(0.0,)))


def test_judge_reads_every_contrast_and_publishes_the_committed_columns(judged_study):
    study = judged_study
    assert all(len(table) for table in study.contrasts.values()), "guidance, shift and capacity all published"
    assert [render.HYPOTHESES[v.hypothesis] for v in study.verdicts] == [
        "H1 memorisation", "H2 drift", "H3 shift", "H4 capacity", "zero-knowledge shake (exploratory)"]
    # 60 draws are too few for any family: every judged verdict says so
    assert study.draws_needed > 60 and all(v.too_few_draws == (60, study.draws_needed) for v in study.verdicts)
    tables = study.tables()
    for name in ("summary", "contrasts", "blind", "hypotheses"):
        assert tables[name].columns.tolist() == _header(name), name
    assert tables["paper_table"].columns[:4].tolist() == _header("paper_table")[:4]
    assert set(tables["summary"][worlds.LABEL]) == {"duplicated", "i.i.d.", "duplicated, UNet 32-64"}
    capacity = tables["contrasts"][tables["contrasts"]["contrast"] == analysis.CAPACITY_CONTRAST]
    assert len(capacity) and capacity[worlds.LABEL].isna().all()
    claims = tables["claims"]
    assert claims.columns[0] == "claim" and "duplicated, UNet 32-64, shift 0, g = 3" in claims.columns
    regimes_in = sorted(set(study.summary[list(analysis.REGIME)].itertuples(index=False, name=None)))
    assert claims.columns[1:].tolist() == [render.regime_label(*regime) for regime in regimes_in]
    assert set(study.metrics()["hypotheses"]) == set(tables["hypotheses"]["hypothesis"])


def _run(tmp_path, monkeypatch):
    """A smoke run of notebook 15 in ``tmp_path``, with the repository's published folders moved there too."""
    for name, folder in {"S2L_FIGURES_DIR": "figures", "S2L_DOCS_DIR": "docs", "S2L_DATA_DIR": "data"}.items():
        monkeypatch.setenv(name, str(tmp_path / folder))
    return notebook.start("15_regimes", "smoke", str(tmp_path / "run"))


def _figure(run):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    path = run.savefig(fig, "regimes_effects")
    plt.close(fig)
    return path


def test_without_publish_the_results_stay_in_the_run_folder(judged_study, tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch)
    outside = [paths.docs_dir(), paths.figures_dir(), paths.data_dir(), tmp_path / "results"]
    written = regimes.write_results(judged_study, run, {}, _figure(run), "abc123", publish=False,
                                    folder=tmp_path / "results")
    assert list(written) == ["run"] and all(p.parent == run.dir for p in written["run"])
    assert not any(p.exists() for p in outside)
    page = (run.dir / "regimes.md").read_text()
    assert "![regimes](figures/regimes_effects.png)" in page and "| H2 drift |" in page
    assert "Built by notebook 15 at `abc123`" in page
    assert pd.read_parquet(run.dir / "regimes_summary.parquet").columns.tolist() == _header("summary")


def test_publishing_writes_the_tables_the_figure_and_the_page_under_docs_results(judged_study, tmp_path,
                                                                               monkeypatch):
    run, folder = _run(tmp_path, monkeypatch), tmp_path / "results"
    figure = _figure(run)
    written = regimes.write_results(judged_study, run, {}, figure, "abc123", publish=True, folder=folder)
    page = paths.results_page("regimes")
    assert written["page"] == [page] and page.parent.name == "results"
    assert written["figures"] == [paths.figures_dir() / "smoke" / "regimes_effects.png"]
    assert written["figures"][0].read_bytes() == figure.read_bytes()
    assert "![regimes](../../figures/smoke/regimes_effects.png)" in page.read_text()
    assert sorted(p.name for p in written["tables"]) == sorted(f"{n}.csv" for n in judged_study.tables())
    assert (folder / "summary.csv").read_text() == judged_study.tables()["summary"].to_csv(index=False)
    # a committed table the study does not make (here: its shard is gone) is never dropped silently
    (folder / "old_table.csv").write_text("x\n1\n")
    with pytest.raises(ConfigError, match="old_table"):
        regimes.write_results(judged_study, run, {}, figure, "abc123", publish=True, folder=folder)


def test_only_a_finished_shard_is_published(tmp_path, capsys):
    sweep_file = tmp_path / "regimes_tiny.yaml"
    sweep_file.write_text("profile: smoke\nnotebooks: [11_s2l_main]\ngrid:\n  sp_guidance: [1.0, 7.5]\n")
    with pytest.raises(ConfigError, match="2 of 2 points are not done"):
        shards.publish(sweep_file, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    assert main(["publish", str(sweep_file)]) == 2 and "2 of 2 points are not done" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no published shard"):
        shards.load(tmp_path)
    assert shards.load_zero_knowledge(tmp_path) is None


def test_the_sign_flip_test_is_exact_over_the_domains():
    # all 3 domains positive: only the all-plus and all-minus assignments reach |sum| = 6 of 8
    assert stats.sign_flip_p(np.array([[1.0, 2.0, 3.0]]))[0] == pytest.approx(2 / 8)
    # a missing domain (NaN) counts as 0; a zero effect gives p = 1
    assert stats.sign_flip_p(np.array([[1.0, np.nan, 3.0], [0.0, 0.0, 0.0]])).tolist() == pytest.approx([0.5, 1.0])
    # 8 agreeing domains: 2/256, the floor no domain-level test can pass
    assert stats.sign_flip_p(np.ones((1, 8)))[0] == pytest.approx(2 / 256)


def _finished_shard(tmp_path, monkeypatch, commit: str) -> tuple:
    """A one-point shard whose notebook run has finished: its params (the i.i.d. world, guidance 7.5), tables
    of one cell (target and S2L), and ``commit`` as the commit it ran at."""

    from s2l_utils import store, sweep

    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "runs"))
    path = tmp_path / "regimes_iid_lora_dreambooth.yaml"
    path.write_text("profile: smoke\nnotebooks: [11_s2l_main]\nfixed: {member_duplicates: []}\n"
                    "grid:\n  sp_guidance: [7.5]\ntables: [s2l_scores, s2l_extraction]\n")
    loaded = sweep.load_sweep(path)
    folder = loaded.run_root(loaded.points()[0]) / "11_s2l_main"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    (folder / "params.json").write_text(json.dumps({"git_commit": commit, "params": {
        "member_duplicates": [], "unet_channels": [16, 32], "nonmember_shift": 0.0, "sp_guidance": 7.5}}))
    label = {"method": "lora", "domain": "D0", "seed": 0, "world": "unused", "nonmember_shift": 0.0, "sp_guidance": 7.5}
    scores, matches = zip(*(_model(np.random.default_rng(0), "c1", label, condition, member_shift=1.0, copies=0,
                                   distance=0.5, classes="1") for condition in (experiment.BEFORE, "s2l")),
                          strict=True)
    drop = list(shards.STORED_REGIME)  # the notebook's tables carry no regime: publish labels them from params.json
    pd.concat(scores).drop(columns=drop).to_parquet(folder / "s2l_scores.parquet")
    pd.concat(matches).drop(columns=drop).to_parquet(folder / "s2l_extraction.parquet")
    return path, paths.cache_dir("cells") / "c1" / "s2l" / store.CELL_INFO


def test_publish_refuses_uncommitted_runs_and_unknown_costs_then_labels_each_run_from_its_params(
        tmp_path, monkeypatch):
    path, info = _finished_shard(tmp_path, monkeypatch, "abc123+dirty")
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match="abc123\\+dirty"):
        shards.publish(path, out, log=lambda *a: None)
    with pytest.raises(FileNotFoundError, match="1 fine-tuned models lack"):
        shards.publish(path, out, allow_dirty=True, log=lambda *a: None)
    info.parent.mkdir(parents=True)
    info.write_text('{"seconds": 12.4, "twin": null, "sibling": "another-cell/s2l"}')
    shards.publish(path, out, allow_dirty=True, log=lambda *a: None)
    stored = pd.read_parquet(out / "regimes_iid_lora_dreambooth.parquet")
    assert set(stored[worlds.LABEL]) == {"i.i.d."}, "the shard stores the world's label"
    scores, matches, names = shards.load(out)
    assert names == ["regimes_iid_lora_dreambooth"] and worlds.LABEL not in scores
    assert set(zip(scores[DATA], scores[TARGET], strict=True)) == {(IID, GRID)}
    assert set(scores["sp_guidance"]) == {7.5}
    assert len(matches) == 2 * GENERATIONS and set(matches["condition"]) == {experiment.BEFORE, "s2l"}
    record = json.loads((out / shards.SHARDS_FILE).read_text())["regimes_iid_lora_dreambooth"]
    assert (record["commit"], record["cells"], record["finetuned_models"], record["model_seconds"],
            record["lent_by_twin"], record["lent_by_sibling"]) == ("abc123+dirty", 1, 1, 12, 0, 1)
