"""The report on constructed summaries: the blind baseline beside the MIA numbers, extraction per duplication
class, and the drift of the generations, in the paper table, the verdicts and the results page."""

import pandas as pd
import pytest

from s2l_utils import experiment, report


def _row(method, comparison, attack, metric, delta, before, verdict="no change", p=0.5):
    return {"method": method, "comparison": comparison, "attack": attack, "metric": metric, "delta": delta,
            "lo": delta - 0.06, "hi": delta + 0.06, "p": p, "p_adjusted": p, "verdict": verdict, "before": before,
            "after": before + delta, "correction": "holm", "cells": 1, "domains": 1, "draws": 2000}


def _summary() -> pd.DataFrame:
    """Two methods on a duplicated world: S2L removes lora's copies of the 32x member and moves its generations
    away from the training images; textual inversion changes nothing."""
    rows = []
    for method, copies, away in (("lora", -2.0, 0.11), ("textual_inversion", 0.0, 0.0)):
        moved = "up" if away else "no change"
        rows += [_row(method, experiment.AFTER, "pia", "auc", 0.01, 0.70),
                 _row(method, experiment.EFFECT, "pia", "advantage", 0.01, 0.20)]
        for metric, delta, before in (("own_copies", copies, 3.0), ("own_distinct", copies / 2, 2.0),
                                      ("other_copies", 0.0, 0.0), ("own_copies_32x", copies, 2.0),
                                      ("own_distinct_32x", copies / 2, 1.0), ("own_copies_1x", 0.0, 1.0),
                                      ("own_distinct_1x", 0.0, 1.0)):
            rows += [_row(method, comparison, "extraction", metric, delta, before)
                     for comparison in (experiment.AFTER, experiment.EFFECT)]
        for metric, delta, before, verdict in (("nearest_median", away, 0.39, moved),
                                               ("own_nearest_median", away, 0.41, moved),
                                               ("identity_accuracy", -away, 0.9, "no change")):
            rows += [_row(method, experiment.AFTER, "extraction", metric, delta, before),
                     _row(method, experiment.EFFECT, "extraction", metric, delta, before, verdict,
                          0.001 if verdict == "up" else 0.5)]
    return pd.DataFrame(rows)


def _blind(auc: float, lo: float, hi: float) -> pd.DataFrame:
    return pd.DataFrame([{"method": m, "auc": auc, "lo": lo, "hi": hi, "cells": c, "domains": 1, "draws": 2000}
                         for m, c in (("lora", 1), ("textual_inversion", 1), (experiment.ALL_METHODS, 2))])


def test_the_paper_table_shows_the_blind_auc_and_the_most_duplicated_class():
    table = experiment.paper_table(_summary(), attacks=["pia"], blind_auc=_blind(0.512, 0.45, 0.575))
    assert table.loc["lora", "blind AUC"] == "0.512 [0.450, 0.575]"
    assert table.loc["lora", "own copies 32x before"] == 2.0 and table.loc["lora", "own copies 32x after"] == 0.0
    assert table.loc["lora", "own copies 32x S2L effect"] == "-2.000 [-2.060, -1.940]"
    assert not any("1x" in c for c in table.columns), "only the most duplicated class"
    assert list(table.columns[:4]) == ["control", "blind AUC", "pia before", "pia after"]
    assert table["control"].to_dict() == {"lora": "cross-domain", "textual_inversion": "real non-member"}
    # a world without duplication has only the 1x class: no extra columns, and no blind column without its table
    plain = _summary()
    plain = plain[~plain["metric"].str.contains("32x")]
    assert not any("x " in c for c in experiment.paper_table(plain, attacks=["pia"]).columns)
    assert "blind AUC" not in experiment.paper_table(plain, attacks=["pia"]).columns


def test_extraction_by_class_and_drift_tables():
    by_class = experiment.extraction_by_class(_summary())
    assert list(by_class.loc["lora"].index) == ["own_copies_32x", "own_distinct_32x", "own_copies_1x",
                                                "own_distinct_1x"]
    assert by_class.loc[("lora", "own_copies_32x"), ["before", "after"]].tolist() == [2.0, 0.0]
    assert by_class.loc[("lora", "own_copies_32x"), "S2L effect"] == "-2.000 [-2.060, -1.940]"
    drift = experiment.drift_table(_summary())
    assert list(drift.loc["lora"].index) == list(experiment.DRIFT_SHOWN)
    assert drift.loc[("lora", "nearest_median"), "S2L effect"] == "+0.110 [+0.050, +0.170] ↑"
    assert drift.loc[("lora", "nearest_median"), "after"] == pytest.approx(0.50)
    assert experiment.drift_table(_summary().query("attack != 'extraction'")).empty
    panels = experiment.effect_panels(_summary())
    assert list(panels) == ["membership inference: Δ |AUC − 0.5|",
                            "extraction: Δ own copies per cell, by duplication", "drift of the generations"]
    assert set(panels["extraction: Δ own copies per cell, by duplication"]["series"]) == {"32x", "1x"}


def test_the_verdicts_say_what_the_blind_auc_means_and_where_the_generations_moved():
    chance = report.verdicts({"main": _summary(), "blind": _blind(0.512, 0.45, 0.575)})
    mia = next(c for c in chance if c["claim"].endswith("— pia"))
    assert "AUC target 0.700, after S2L 0.710; blind AUC 0.512 [0.450, 0.575]" in mia["measured"]
    blind = next(c for c in chance if "blind baseline" in c["claim"])
    assert blind["agrees"].startswith("yes")
    assert "no separation detected by simple image statistics" in blind["measured"]
    assert "over 1 domain(s):" in blind["measured"] and "cells" not in blind["measured"], "one fit per domain"
    shifted = next(c for c in report.verdicts({"main": _summary(), "blind": _blind(0.80, 0.74, 0.86)})
                   if "blind baseline" in c["claim"])
    assert shifted["agrees"] == "no: separable without the model"
    assert "an MIA AUC up to about 0.80 needs no leakage" in shifted["measured"]
    extraction = next(c for c in chance if "extraction" in c["claim"])
    assert "(32x members 2.00 → 1.00) (1x members 1.00 → 1.00)" in extraction["measured"]
    drift = next(c for c in chance if c["claim"].startswith("(drift)"))
    assert "lora +0.110 [+0.050, +0.170] (away); textual_inversion +0.000 [-0.060, +0.060] (no shown change)" \
        in drift["measured"]
    assert "Target 0.390 → after S2L 0.445" in drift["measured"]
    assert drift["agrees"].startswith("no: lower for 1 of 1"), "moved away: the opposite of towards"
    assert "token methods: textual_inversion between" in drift["measured"] and "(counted: the 1 methods" in \
        drift["measured"], "a token method's drift against its real-non-member control is bracketed, not counted"
    assert not any("confounded" in c["measured"] for c in chance)


def test_the_readme_section_states_the_token_control_and_shows_class_and_drift_tables():
    tables = {"main": _summary(), "blind": _blind(0.512, 0.45, 0.575)}
    main_table = experiment.paper_table(tables["main"], attacks=["pia"], blind_auc=tables["blind"])
    text = report.markdown(tables, "mini", main_table, None, [])
    assert report.TOKEN_CONTROL in text and "never trains" not in text and "confounded" not in text
    assert "Holm" in text and "chance (2.5% of the estimates each way" in text and "|AUC − 0.5|" in text
    assert "Extraction per duplication class" in text and "own_distinct_32x" in text
    assert "Drift of the attacked domain's generations" in text and "own_nearest_median" in text
    assert "| blind AUC" in text


def test_a_token_methods_effect_is_bracketed_by_its_two_biased_controls():
    rows = [_row(m, comparison, "pia", "advantage", delta, 0.2)
            for m, effects in (("lora", (0.05, 0.02)), ("textual_inversion", (0.06, -0.03)))
            for comparison, delta in zip((experiment.EFFECT, experiment.AFTER), effects, strict=True)]
    text = report.token_bracket(pd.DataFrame(rows), "pia")
    assert text.startswith("; token methods: textual_inversion between -0.030 [")
    assert "(after − before, biased down) and +0.060 [" in text and "lora" not in text
    assert report.token_bracket(pd.DataFrame(rows[:2]), "pia") == "", "no token method, no bracket"
    claim = report.verdicts({"main": pd.DataFrame(rows)})[0]
    assert "token methods: textual_inversion between" in claim["measured"]


def test_publishing_collects_finished_sibling_runs_figures_and_refuses_to_drop_a_table(tmp_path, monkeypatch):
    from s2l_utils import notebook, paths
    from s2l_utils.config import ConfigError, load_profile

    runs = tmp_path / "runs" / "smoke"
    for folder in ("01_pretrain_target", "09_membership_inference", ".10_data_extraction.running",
                   "10_data_extraction.failed", "14_report", "15_regimes"):
        (runs / folder / "figures").mkdir(parents=True)
        (runs / folder / "figures" / f"{folder.strip('.')}.png").write_bytes(folder.encode())
    run = notebook.Run("14_report", "smoke", load_profile("smoke"), runs / "14_report", "cpu")
    found = report.run_figures(run)
    assert [f.parent.parent.name for f in found] == ["01_pretrain_target", "09_membership_inference", "14_report"]
    monkeypatch.setenv("S2L_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("S2L_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("S2L_DOCS_DIR", str(tmp_path / "docs"))
    tables = {"main": _summary()}
    written = report.publish(run, tables, lambda links: "\n".join(links), log=lambda *_: None)
    assert [p.name for p in written["figures"]] == [f.name for f in found]
    assert all((tmp_path / "figures" / "smoke" / f.name).read_bytes() == f.read_bytes() for f in found)
    assert paths.results_page("smoke").read_text() == "../../figures/smoke/14_report.png", "the report's own, relative"
    assert (tmp_path / "data" / "results" / "smoke" / "main.csv").read_text() == tables["main"].to_csv(index=False)
    (tmp_path / "data" / "results" / "smoke" / "blind.csv").write_text("method,auc\n")
    with pytest.raises(ConfigError, match=r"would drop the committed tables \['blind'\].*11_s2l_main"):
        report.publish(run, tables, lambda links: "changed", log=lambda *_: None)
    assert paths.results_page("smoke").read_text() == "../../figures/smoke/14_report.png", "nothing written"
