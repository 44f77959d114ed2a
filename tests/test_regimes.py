"""The regime study's analysis (``s2l_utils.regimes``) on constructed cells whose answers are planted: contrasts
between settings, the pre-registered verdicts, the figure, and publishing only finished shards."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from s2l_utils import experiment, plots, regimes, stats
from s2l_utils import config
from s2l_utils.config import ConfigError

DOMAINS = [f"D{i}" for i in range(6)]
GENERATIONS = 40


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
    """Two worlds x guidance 1 / 7.5 x LoRA and textual inversion x 6 domains (x non-member ``shifts``).
    Planted: in the duplicated world at g = 1, S2L copies the 32x member 12 times in 40 (target and controls 2)
    and strengthens the loss attack; at g = 7.5 it copies nothing and its generations lie 0.3 further away; the
    i.i.d. world copies nothing. With shifted non-members, S2L at g = 7.5 separates members far more than its
    control, so S2L's effect rises with the shift there and only there. Without ``planted``, S2L is its control.
    Two seeds per domain."""
    rng = np.random.default_rng(seed)
    scores, matches = [], []
    for world, shift, g in itertools.product((regimes.DUPLICATED, regimes.IID), shifts, (1.0, 7.5)):
        duplicated = world == regimes.DUPLICATED
        for method, domain, seed_ in itertools.product(("lora", "textual_inversion"), DOMAINS, (0, 1)):
                    label = {"method": method, "domain": domain, "seed": seed_, "world": world,
                             "nonmember_shift": shift, "sp_guidance": g}
                    cell = f"{world}-{shift}-{g}-{method}-{domain}-{seed_}"
                    base = dict(member_shift=1.0, copies=2 * duplicated, distance=0.5,
                                classes="1,32" if duplicated else "1")
                    s2l = dict(base, member_shift=3.0 if g == 1 else 1.0 + 10 * shift,
                               copies=(12 if g == 1 else 0) * duplicated, distance=0.5 if g == 1 else 0.8)
                    s2l = s2l if planted else base
                    for condition, kind in ((experiment.BEFORE, base), ("s2l", s2l),
                                            (experiment.control_of(method), base)):
                        s, m = _model(rng, cell, label, condition, **kind)
                        scores.append(s)
                        matches.append(m)
    return pd.concat(scores, ignore_index=True), pd.concat(matches, ignore_index=True)


@pytest.fixture(scope="module")
def analysed():
    scores, matches = _grid()
    effects = regimes.effects(scores, matches, n_bootstrap=1000)
    return scores, effects, regimes.summary(effects), regimes.contrasts(effects, "sp_guidance", 7.5, 1.0)


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
    heaviest = summary[(summary["metric"] == regimes.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)]
    at = heaviest.set_index(["world", "sp_guidance", "method"])["delta"]
    assert at[regimes.DUPLICATED, 1.0, "lora"] == pytest.approx(10) and at[regimes.DUPLICATED, 7.5, "lora"] == -2
    assert regimes.IID not in heaviest["world"].tolist(), "the i.i.d. world has no 32x class"
    bracket = regimes.bracketed(summary[(summary["attack"] == stats.EXTRACTION)
                                        & (summary["metric"] == regimes.HEAVIEST)]).set_index(["sp_guidance", "method"])
    assert bracket.loc[(1.0, "lora"), "verdict"] == "up" and bracket.loc[(1.0, "textual_inversion"), "verdict"] == "up"
    assert np.isnan(bracket.loc[(1.0, "lora"), "after_delta"])
    assert bracket.loc[(7.5, "textual_inversion"), "after_delta"] == pytest.approx(-2)


def test_the_guidance_contrast_is_paired_and_pooled_over_methods(analysed):
    _, _, _, guidance = analysed
    drift = guidance[(guidance["metric"] == "nearest_median") & (guidance["comparison"] == experiment.EFFECT)
                     & (guidance["world"] == regimes.DUPLICATED)].set_index("method")
    # s2l moved 0.3 away at 7.5 and not at 1, its control never; a draw that picks many of g = 1's copies
    # lowers g = 1's median, never 7.5's (no copies): the paired contrast is 0.3 and never below it
    pooled = drift.loc[experiment.ALL_METHODS]
    assert pooled["delta"] == pytest.approx(0.3) and pooled["lo"] == pytest.approx(0.3) and pooled["hi"] > 0.3
    # per method, over both methods, and over the weight methods only (LoRA here): each cell is a domain x seed
    assert drift["cells"].to_dict() == {"lora": 12, "textual_inversion": 12, experiment.ALL_METHODS: 24,
                                        regimes.WEIGHT_METHODS: 12}
    assert (drift["domains"] == 6).all()



def test_the_pool_over_all_methods_takes_only_comparisons_every_method_has(analysed):
    # a named control that is a method's own is folded into its S2L effect, so a named comparison can exist for
    # some methods only (here "S2L - real non-member" for LoRA alone): pooling it would pool LoRA under "all"
    _, effects, _, _ = analysed
    lora = (effects.rows["method"] == "lora") & (effects.rows["comparison"] == experiment.EFFECT)
    named = effects.rows[lora].assign(comparison="S2L - real non-member")
    more = stats.Estimates(pd.concat([effects.rows, named], ignore_index=True),
                           np.concatenate([effects.draws, effects.draws[lora.to_numpy()]]))
    table = regimes.contrasts(more, "sp_guidance", 7.5, 1.0, metrics=["nearest_median"])
    methods = table.groupby("comparison")["method"].agg(set)
    assert methods[experiment.EFFECT] == {"lora", "textual_inversion", experiment.ALL_METHODS, regimes.WEIGHT_METHODS}
    assert methods["S2L - real non-member"] == {"lora", regimes.WEIGHT_METHODS}


def test_each_regime_summary_says_how_many_domains_agree(analysed):
    _, _, summary, _ = analysed
    row = summary[(summary["metric"] == regimes.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)
                  & (summary["sp_guidance"] == 1.0) & (summary["method"] == "lora")].iloc[0]
    assert (row["domains_up"], row["domains_down"]) == (6, 0)  # every domain copies 10 more after S2L
    assert row["p_sign_flip"] == pytest.approx(2 / 64)  # the floor for 6 domains


DRIFT_ONLY = "confirmed (guidance orders the drift; that the drift lowers extraction and MIA is not shown)"


def test_the_hypotheses_follow_their_preregistered_rules(analysed):
    scores, _, summary, guidance = analysed
    h1 = regimes.h1_memorisation(summary)
    assert h1["verdict"] == "confirmed" and "g = 1: lora +10.000" in h1["evidence"]
    assert "The target copies 2.000 32x members per cell" in h1["evidence"]
    h2 = regimes.h2_drift(summary, guidance)
    # the planted copies (+10 at g = 1, -2 at 7.5) and loss effects fall with guidance: the mechanism shows
    assert h2["verdict"] == ("confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on duplicated "
                             f"world: extraction {regimes.HEAVIEST}, loss {stats.STRENGTH}; i.i.d. world: loss "
                             f"{stats.STRENGTH})") and "+0.300 [+0.300, +0.300]" in h2["evidence"]
    # with those contrasts around 0 only the drift's ordering is confirmed
    flat = guidance.copy()
    lowered = (flat["comparison"] == experiment.EFFECT) & (flat["method"] == regimes.WEIGHT_METHODS) & (
        flat["hi"] < 0) & flat["metric"].isin([regimes.HEAVIEST, stats.STRENGTH])
    assert lowered.sum() == 3
    flat.loc[lowered, ["delta", "lo", "hi"]] = [0.0, -0.1, 0.1]
    assert regimes.h2_drift(summary, flat)["verdict"] == DRIFT_ONLY
    # without the i.i.d. world H1 cannot be confirmed
    assert regimes.h1_memorisation(summary[summary["world"] == regimes.DUPLICATED])["verdict"].startswith("not shown")
    blind = regimes.blind_by_world(scores, n_bootstrap=200)
    assert sorted(blind["world"]) == sorted([regimes.DUPLICATED, regimes.IID])
    h3 = regimes.h3_shift(summary, blind, pd.DataFrame())
    assert h3["verdict"] == "pending" and "i.i.d. shift 0" in h3["evidence"]


def _capacity_grid(wide_distance, wide_copies, seed=0):
    """The duplicated world at SP guidance 3 on the grid's target and on the wider one (``regimes.WIDE``), LoRA and
    textual inversion x 6 domains x 2 seeds. Both targets copy their 32x member 2 times in 40 in every domain, and
    so do the controls, whose generations lie at 0.6 (grid) and 0.7 (wider) against the targets' 0.5. On the grid's
    target S2L's generations lie at 0.8 and copy no more; on the wider one LoRA's lie at ``wide_distance`` and copy
    ``wide_copies`` times, while textual inversion's drift far (1.5): pooling it in would change H4's number."""
    rng = np.random.default_rng(seed)
    scores, matches = [], []
    for world, method, domain, seed_ in itertools.product((regimes.DUPLICATED, regimes.WIDE),
                                                          ("lora", "textual_inversion"), DOMAINS, (0, 1)):
        label = {"method": method, "domain": domain, "seed": seed_, "world": world, "nonmember_shift": 0.0,
                 "sp_guidance": regimes.H4_GUIDANCE}
        cell = f"{world}-{method}-{domain}-{seed_}"
        base = dict(member_shift=1.0, copies=2, distance=0.5, classes="1,32")
        wide = world == regimes.WIDE
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
    effects = regimes.effects(*_capacity_grid(wide_distance, wide_copies), n_bootstrap=300)
    summary = regimes.summary(effects).assign(**summary_values)
    return regimes.h4_capacity(summary, regimes.capacity_contrast(effects))


def test_h4_compares_the_wider_target_with_the_grids_cell_by_cell():
    # LoRA on the wider target: no drift against its control (0.5 - 0.7 = -0.2, grid: 0.8 - 0.6 = +0.2), 10 more copies
    confirmed = _h4(wide_distance=0.5, wide_copies=12)
    assert confirmed["verdict"] == "confirmed", confirmed
    assert "weight methods (lora), S2L effect on the wider target minus that on the grid's: median nearest " \
           "distance -0.400 [-0.400, -0.400]" in confirmed["evidence"]
    assert "of after − before -0.300" in confirmed["evidence"]  # the other comparison, reported beside it
    assert "32x copies +10.000" in confirmed["evidence"] and "in 6 of 8 domains" in confirmed["evidence"]
    assert "textual_inversion (after - before) nearest_median +0.700" in confirmed["evidence"]
    assert _h4(wide_distance=1.1, wide_copies=12)["verdict"] == "refuted"  # drifts more on the wider target
    assert _h4(wide_distance=0.5, wide_copies=0)["verdict"] == "refuted"  # drifts less but copies less
    assert _h4(wide_distance=0.9, wide_copies=2)["verdict"] == "not shown"  # the same S2L effect on both
    untestable = _h4(wide_distance=0.5, wide_copies=12, domains_reference=1)  # one copying domain
    assert untestable["verdict"].startswith("not shown (drift smaller; copies not testable")
    assert regimes.h4_capacity(pd.DataFrame(), pd.DataFrame())["verdict"] == "pending"


def test_the_capacity_contrast_pairs_each_cell_with_its_twin_on_the_other_target():
    scores, matches = _capacity_grid(0.5, 12)
    grid_scores, grid_matches = (t[t["world"] == regimes.DUPLICATED] for t in (scores, matches))
    twin = [t.assign(world=regimes.WIDE, cell=t["cell"] + "-wide") for t in (grid_scores, grid_matches)]
    effects = regimes.effects(pd.concat([grid_scores, twin[0]]), pd.concat([grid_matches, twin[1]]), n_bootstrap=300)
    summary = regimes.summary(effects)
    strength = summary[(summary["metric"] == stats.STRENGTH) & (summary["comparison"] == experiment.EFFECT)]
    assert (strength["hi"] - strength["lo"] > 0.01).all(), "each target's effect is uncertain"
    same = regimes.capacity_contrast(effects)
    same = same[same["metric"] == stats.STRENGTH]
    assert len(same) and (same["lo"] == 0).all() and (same["hi"] == 0).all(), "but identical twins differ by 0"
    # the wider target's verdicts are judged in families of their own: the grid's are as without it
    alone = regimes.summary(regimes.effects(grid_scores, grid_matches, n_bootstrap=300))
    pd.testing.assert_frame_equal(summary[summary["world"] == regimes.DUPLICATED].reset_index(drop=True),
                                  alone.reset_index(drop=True))


def test_a_world_is_labelled_by_its_data_and_by_a_target_that_is_not_the_grids():
    assert regimes.world_of({"member_duplicates": [32, 16], "unet_channels": [16, 32]}) == regimes.DUPLICATED
    assert regimes.world_of({"member_duplicates": [], "unet_channels": [16, 32]}) == regimes.IID
    wide = regimes.world_of({"member_duplicates": [32, 16, 8, 4], "unet_channels": [32, 64]})
    assert wide == regimes.WIDE and regimes.data_of(wide) == regimes.DUPLICATED
    for profile in ("smoke", "mini"):  # each profile's own target is its grid's
        params = {"member_duplicates": [32], "unet_channels": config.load_profile(profile).unet_channels}
        assert regimes.world_of(params) == regimes.DUPLICATED


def _heaviest_effects(summary, **values):
    rows = (summary["metric"] == regimes.HEAVIEST) & (summary["comparison"] == experiment.EFFECT)
    out = summary.copy()
    for column, value in values.items():
        out.loc[rows, column] = value
    return out


def test_h1_is_refuted_only_below_its_margin_and_needs_a_target_that_copies(analysed):
    _, _, summary, _ = analysed
    below = _heaviest_effects(summary, delta=-0.1, lo=-0.5, hi=0.2, verdict="no change")
    assert regimes.h1_memorisation(below)["verdict"] == "refuted"
    wide = _heaviest_effects(summary, delta=-0.1, lo=-0.5, hi=0.3, verdict="no change")  # a CI reaching +0.3
    assert regimes.h1_memorisation(wide)["verdict"] == "not shown"
    assert regimes.copying_domains(summary) == 6
    one_copier = summary.assign(domains_reference=1)  # one copying domain: every copies CI reaches 0
    assert regimes.h1_memorisation(one_copier)["verdict"].startswith("not testable (the target copies in 1 of 8")


def test_h2_reads_a_ci_around_zero_under_both_rules_and_checks_that_s2l_is_not_smaller_at_g1(analysed):
    _, effects, summary, guidance = analysed
    assert regimes.h2_drift(summary, regimes.contrasts(effects, "sp_guidance", 1.0, 7.5))["verdict"] == "refuted"
    drift = (guidance["metric"] == "nearest_median") & (guidance["comparison"] == experiment.EFFECT)
    around = guidance.copy()
    around.loc[drift, ["lo", "hi"]] = [-0.1, 0.1]
    assert regimes.h2_drift(summary, around)["verdict"] == regimes.AROUND_ZERO
    larger_at_75 = guidance.copy()
    copies = (guidance["metric"] == regimes.HEAVIEST) & (guidance["comparison"] == experiment.EFFECT)
    larger_at_75.loc[copies, ["delta", "lo", "hi"]] = [1.0, 0.5, 1.5]
    duplicated = larger_at_75[larger_at_75["world"] == regimes.DUPLICATED]  # (the i.i.d. world has no 32x class)
    assert regimes.h2_drift(summary, duplicated)["verdict"].startswith("not shown (drift ordered")
    assert regimes.h2_drift(summary, larger_at_75)["verdict"] == "not shown (the worlds disagree)"
    # where the target copies in too few domains the copies term is not judged (every CI reaches 0 by construction)
    one_copier = summary.assign(domains_reference=1)
    h2 = regimes.h2_drift(one_copier, duplicated)
    # (so the mechanism it names rests on the loss attack alone: the copies, lower at 7.5, are not judged)
    assert h2["verdict"] == ("confirmed (guidance orders the drift; S2L's effect is lower at g = 7.5 on duplicated "
                             f"world: loss {stats.STRENGTH})") and "not judged: too few copying domains" in h2["evidence"]


def test_the_shift_hypothesis_pairs_each_cell_with_its_iid_twin():
    scores, matches = _grid(shifts=(0.0, 0.5))
    effects = regimes.effects(scores, matches, n_bootstrap=1000)
    summary = regimes.summary(effects)
    shift = regimes.contrasts(effects, "nonmember_shift", 0.5, 0.0)
    loss = shift[(shift["attack"] == "loss") & (shift["metric"] == stats.STRENGTH)
                 & (shift["comparison"] == experiment.EFFECT) & (shift["method"] == experiment.ALL_METHODS)]
    at = loss.set_index(["world", "sp_guidance"])
    assert at.loc[(regimes.DUPLICATED, 7.5), "lo"] > 0
    assert at.loc[(regimes.DUPLICATED, 1.0), "lo"] < 0 < at.loc[(regimes.DUPLICATED, 1.0), "hi"]
    blind = regimes.blind_by_world(scores, n_bootstrap=200).set_index(["world", "nonmember_shift"])
    assert (blind.xs(0.5, level=1)["lo"] > 0.5).all() and (blind.xs(0.0, level=1)["lo"] < 0.5).all()
    h3 = regimes.h3_shift(summary, blind.reset_index(), shift)
    # S2L at g = 7.5 separates members far better than its control only with shifted non-members
    assert h3["verdict"] == "confirmed" and "g = 7.5 lora loss" in h3["evidence"]
    flat = shift.assign(lo=-1.0, hi=1.0)
    assert regimes.h3_shift(summary, blind.reset_index(), flat)["verdict"] == regimes.AROUND_ZERO
    # an "up" that the i.i.d. twin shares, or a blind baseline that sees no shift, does not confirm
    both_up = summary.copy()
    both_up.loc[both_up["metric"] == stats.STRENGTH, "verdict"] = "up"
    assert regimes.h3_shift(both_up, blind.reset_index(), shift)["verdict"] == "not shown"
    blind_blind = blind.reset_index().assign(lo=0.4)
    assert regimes.h3_shift(summary, blind_blind, shift)["verdict"] == "not shown"
    # S2L - real non-member is judged on its own (weight methods; a token method's is an end of its own bracket):
    # with every own-control effect "no change", it alone confirms, and the verdict says so
    def as_real_nonmember(table):
        return table[table["comparison"] == experiment.EFFECT].assign(comparison=regimes.REAL_NONMEMBER)

    flat_own = summary.assign(verdict=summary["verdict"].where(summary["comparison"] != experiment.EFFECT,
                                                               "no change"))
    h3 = regimes.h3_shift(pd.concat([flat_own, as_real_nonmember(summary)]), blind.reset_index(),
                          pd.concat([shift, as_real_nonmember(shift)]))
    assert h3["verdict"] == ("confirmed (against the real-non-member control; not shown against each method's own "
                             "control)")
    own, real = h3["evidence"].split("against the real-non-member control: ")
    assert "against each method's own control: 0 of" in own and "g = 7.5 lora loss" in real
    assert "textual_inversion" not in real
    assert experiment.ALL_METHODS not in real and regimes.WEIGHT_METHODS not in real, "pooled rows are no method"
    no_mia = summary[summary["metric"] != stats.STRENGTH]
    assert regimes.h3_shift(no_mia, blind.reset_index(), shift)["verdict"] == "pending", "nothing judged: no verdict"


def test_nothing_is_confirmed_when_s2l_is_its_control():
    scores, matches = _grid(shifts=(0.0, 0.5), planted=False)
    effects = regimes.effects(scores, matches, n_bootstrap=1000)
    summary = regimes.summary(effects)
    verdicts = [regimes.h1_memorisation(summary),
                regimes.h2_drift(summary, regimes.contrasts(effects, "sp_guidance", 7.5, 1.0)),
                regimes.h3_shift(summary, regimes.blind_by_world(scores, 200),
                                 regimes.contrasts(effects, "nonmember_shift", 0.5, 0.0))]
    assert len(verdicts) == 3 and not any(v["verdict"] == "confirmed" for v in verdicts)
    assert verdicts[0]["verdict"] == "refuted"  # S2L equals its control: no copies gained, CIs at 0


def test_the_zero_knowledge_shake_judges_each_family_against_the_target(analysed):
    _, _, summary, _ = analysed
    shaken = summary[(summary["world"] == regimes.DUPLICATED) & (summary["sp_guidance"] == 1.0)]
    verdict = regimes.zero_knowledge(shaken)
    assert verdict["verdict"] == "MIA strength: yes; 32x copies: yes" and "exploratory" in verdict["hypothesis"]
    assert "lora 32x copies +10.000" in verdict["evidence"]


def test_the_draws_needed_let_the_largest_family_pass_holm():
    table = pd.DataFrame({"comparison": ["e"] * 5, "metric": ["advantage"] * 3 + ["nearest_median", "auc"],
                          "p_adjusted": [0.1, 0.2, 0.3, 0.4, np.nan]})
    assert regimes.draws_needed(table) == 120  # 3 verdicts: 2 / (draws + 1) < 0.05 / 3
    # rows of the wider target are judged in families of their own: they do not enlarge the grid's
    worlds = table.assign(world=regimes.DUPLICATED)
    both = pd.concat([worlds, worlds.assign(world=regimes.WIDE)])
    assert regimes.draws_needed(both) == 120
    assert regimes.draws_needed(pd.concat([worlds, worlds.assign(world=regimes.IID)])) == 240


def test_the_regime_figure_has_a_row_per_world_and_a_column_per_panel(analysed):
    _, _, summary, _ = analysed
    panels = regimes.figure_panels(summary)
    assert len(panels) == 3 and all(set(p["regime"]) == {"duplicated, shift 0", "i.i.d., shift 0"}
                                    for p in panels.values())
    fig = plots.regime_grid(panels)
    assert fig.axes[0].get_title().startswith("MIA loss") and len(fig.axes) == 2 * 3
    # a token method's marker is filled only when both ends of its bracket agree
    after_flat = summary.copy()
    token_after = (after_flat["method"] == "textual_inversion") & (after_flat["comparison"] == experiment.AFTER)
    after_flat.loc[token_after, "verdict"] = "no change"
    copies = next(p for title, p in regimes.figure_panels(after_flat).items() if "copies" in title)
    at = copies[copies["regime"] == "duplicated, shift 0"].set_index(["x", "method"])["verdict"]
    assert (at[1.0, "lora"], at[1.0, "textual_inversion"]) == ("up", "no change")


def test_only_a_finished_shard_is_published(tmp_path):
    sweep_file = tmp_path / "regimes_tiny.yaml"
    sweep_file.write_text("profile: smoke\nnotebooks: [11_s2l_main]\ngrid:\n  sp_guidance: [1.0, 7.5]\n")
    with pytest.raises(ConfigError, match="2 of 2 points are not done"):
        regimes.publish(sweep_file, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    with pytest.raises(FileNotFoundError, match="no published shard"):
        regimes.load(tmp_path)


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

    from s2l_utils import paths, sweep

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
                                   distance=0.5, classes="1") for condition in (experiment.BEFORE, "s2l")))
    drop = list(regimes.REGIME)  # the notebook's tables carry no regime: publish labels them from params.json
    pd.concat(scores).drop(columns=drop).to_parquet(folder / "s2l_scores.parquet")
    pd.concat(matches).drop(columns=drop).to_parquet(folder / "s2l_extraction.parquet")
    return path, paths.cache_dir("cells") / "c1" / "s2l" / experiment.CELL_INFO


def test_publish_refuses_uncommitted_runs_and_unknown_costs_then_labels_each_run_from_its_params(
        tmp_path, monkeypatch):
    path, info = _finished_shard(tmp_path, monkeypatch, "abc123+dirty")
    out = tmp_path / "results"
    with pytest.raises(ConfigError, match="abc123\\+dirty"):
        regimes.publish(path, out, log=lambda *a: None)
    with pytest.raises(FileNotFoundError, match="1 fine-tuned models lack"):
        regimes.publish(path, out, allow_dirty=True, log=lambda *a: None)
    info.parent.mkdir(parents=True)
    info.write_text('{"seconds": 12.4, "twin": null, "sibling": "another-cell/s2l"}')
    regimes.publish(path, out, allow_dirty=True, log=lambda *a: None)
    scores, matches, names = regimes.load(out)
    assert names == ["regimes_iid_lora_dreambooth"]
    assert set(scores["world"]) == {regimes.IID} and set(scores["sp_guidance"]) == {7.5}
    assert len(matches) == 2 * GENERATIONS and set(matches["condition"]) == {experiment.BEFORE, "s2l"}
    record = json.loads((out / regimes.SHARDS_FILE).read_text())["regimes_iid_lora_dreambooth"]
    assert (record["commit"], record["cells"], record["finetuned_models"], record["model_seconds"],
            record["lent_by_twin"], record["lent_by_sibling"]) == ("abc123+dirty", 1, 1, 12, 0, 1)
