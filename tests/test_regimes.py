"""The regime study's analysis (``s2l_utils.regimes``) on constructed cells whose answers are planted: contrasts
between settings, the pre-registered verdicts, the figure, and publishing only finished shards."""

import itertools

import numpy as np
import pandas as pd
import pytest

from s2l_utils import experiment, plots, regimes, stats
from s2l_utils.config import ConfigError

DOMAINS = [f"D{i}" for i in range(6)]
GENERATIONS = 40


def _model(rng, cell, label, condition, *, member_shift, copies, distance, classes):
    """One model's scores (loss and blind attacks) and matches: members score ``member_shift`` above
    non-members; the first ``copies`` generations copy the domain's 32x member, the rest lie at ``distance``."""
    domain = label["domain"]
    files = [f"{domain}-m{i}" for i in range(8)] + [f"{domain}-n{i}" for i in range(8)]
    member = np.arange(16) < 8
    attacks = ["loss", "blind"] if condition == experiment.BEFORE else ["loss"]
    scores = pd.concat([pd.DataFrame({"cell": cell, **label, "condition": condition, "attack": attack,
                                      "file_name": files, "is_member": member,
                                      "score": rng.normal(size=16) + member * member_shift})
                        for attack in attacks], ignore_index=True)
    copied = np.arange(GENERATIONS) < copies
    matches = pd.DataFrame({"cell": cell, **label, "condition": condition, "generation": range(GENERATIONS),
                            "extracted": copied, "nearest_domain": domain,
                            "nearest_file": np.where(copied, f"{domain}-m0", f"{domain}-m5"),
                            "nearest_duplicates": np.where(copied, 32 if classes != "1" else 1, 1),
                            "own_classes": classes, "distance": np.where(copied, 0.0, distance),
                            "own_distance": np.where(copied, 0.0, distance)})
    return scores, matches


def _grid(seed=0, shifts=(0.0,)):
    """Two worlds x guidance 1 / 7.5 x LoRA and textual inversion x 6 domains (x non-member ``shifts``).
    Planted: in the duplicated world at g = 1, S2L copies the 32x member 12 times in 40 (target and controls 2)
    and strengthens the loss attack; at g = 7.5 it copies nothing and its generations lie 0.3 further away; the
    i.i.d. world copies nothing. With shifted non-members, S2L at g = 7.5 separates members far more than its
    control, so S2L's effect rises with the shift there and only there."""
    rng = np.random.default_rng(seed)
    scores, matches = [], []
    for world, shift, g in itertools.product((regimes.DUPLICATED, regimes.IID), shifts, (1.0, 7.5)):
        duplicated = world == regimes.DUPLICATED
        for method in ("lora", "textual_inversion"):
                for domain in DOMAINS:
                    label = {"method": method, "domain": domain, "seed": 0, "world": world,
                             "nonmember_shift": shift, "sp_guidance": g}
                    cell = f"{world}-{shift}-{g}-{method}-{domain}"
                    base = dict(member_shift=1.0, copies=2 * duplicated, distance=0.5,
                                classes="1,32" if duplicated else "1")
                    s2l = dict(base, member_shift=3.0 if g == 1 else 1.0 + 10 * shift,
                               copies=(12 if g == 1 else 0) * duplicated, distance=0.5 if g == 1 else 0.8)
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
    assert drift["cells"].tolist() == [6, 6, 12] and (drift["domains"] == 6).all()


def test_the_hypotheses_follow_their_preregistered_rules(analysed):
    scores, _, summary, guidance = analysed
    h1 = regimes.h1_memorisation(summary)
    assert h1["verdict"] == "confirmed" and "g = 1: lora +10.000" in h1["evidence"]
    h2 = regimes.h2_drift(summary, guidance)
    assert h2["verdict"] == "confirmed" and "+0.300 [+0.300, +0.300]" in h2["evidence"]
    # without the i.i.d. world H1 cannot be confirmed; with copies falling everywhere it is refuted
    assert regimes.h1_memorisation(summary[summary["world"] == regimes.DUPLICATED])["verdict"].startswith("not shown")
    falling = summary.assign(delta=-summary["delta"].abs(), lo=-summary["hi"].abs() - 1, hi=-summary["lo"].abs(),
                             verdict="down")
    assert regimes.h1_memorisation(falling)["verdict"] == "refuted"
    blind = regimes.blind_by_world(scores, n_bootstrap=200)
    assert sorted(blind["world"]) == sorted([regimes.DUPLICATED, regimes.IID])
    h3 = regimes.h3_shift(blind, pd.DataFrame())
    assert h3["verdict"] == "pending" and "i.i.d. shift 0" in h3["evidence"]


def test_the_shift_hypothesis_pairs_each_cell_with_its_iid_twin():
    scores, matches = _grid(shifts=(0.0, 0.5))
    effects = regimes.effects(scores, matches, n_bootstrap=400)
    shift = regimes.contrasts(effects, "nonmember_shift", 0.5, 0.0)
    loss = shift[(shift["attack"] == "loss") & (shift["metric"] == stats.STRENGTH)
                 & (shift["comparison"] == experiment.EFFECT) & (shift["method"] == experiment.ALL_METHODS)]
    at = loss.set_index(["world", "sp_guidance"])
    assert at.loc[(regimes.DUPLICATED, 7.5), "lo"] > 0
    assert at.loc[(regimes.DUPLICATED, 1.0), "lo"] < 0 < at.loc[(regimes.DUPLICATED, 1.0), "hi"]
    blind = regimes.blind_by_world(scores, n_bootstrap=200)
    assert len(blind) == 4 and set(blind["nonmember_shift"]) == {0.0, 0.5}
    h3 = regimes.h3_shift(blind, shift)
    # S2L's effect rises with the shift at g = 7.5, but the blind baseline (scored on the same constructed
    # images in both worlds) cannot see a shift: the rule needs both, so H3 is not shown, nor refuted
    assert h3["verdict"] == "not shown" and "above 0" in h3["evidence"]
    flat = shift.assign(lo=-1.0, hi=1.0)
    assert regimes.h3_shift(blind, flat)["verdict"] == "refuted"


def test_the_drift_hypothesis_is_refuted_when_guidance_does_not_order_the_drift(analysed):
    _, effects, summary, _ = analysed
    reversed_ = regimes.contrasts(effects, "sp_guidance", 1.0, 7.5)
    reversed_["contrast"] = "sp_guidance 7.5 - 1.0"
    assert regimes.h2_drift(summary, reversed_)["verdict"] == "refuted"


def test_the_regime_figure_has_a_row_per_world_and_a_column_per_panel(analysed):
    _, _, summary, _ = analysed
    panels = regimes.figure_panels(summary)
    assert len(panels) == 3 and all(set(p["regime"]) == {"duplicated, shift 0", "i.i.d., shift 0"}
                                    for p in panels.values())
    fig = plots.regime_grid(panels)
    assert fig.axes[0].get_title().startswith("MIA loss") and len(fig.axes) == 2 * 3


def test_only_a_finished_shard_is_published(tmp_path):
    sweep_file = tmp_path / "regimes_tiny.yaml"
    sweep_file.write_text("profile: smoke\nnotebooks: [11_s2l_main]\ngrid:\n  sp_guidance: [1.0, 7.5]\n")
    with pytest.raises(ConfigError, match="2 of 2 points are not done"):
        regimes.publish(sweep_file, tmp_path / "results")
    assert not (tmp_path / "results").exists()
    with pytest.raises(FileNotFoundError, match="no published shard"):
        regimes.load(tmp_path)
