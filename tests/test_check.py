"""The reproduction check: committed tables against a run's, row by row and claim by claim."""

from pathlib import Path

import pandas as pd
import pytest

from s2l_utils import check, experiment, notebook, report

COMMITTED = Path(__file__).resolve().parents[1] / "data" / "results" / "mini"


@pytest.fixture(scope="module")
def committed():
    tables = check.read_tables(COMMITTED)
    assert {"main", "blind"} <= set(tables)
    return tables


def _copy(tables, names=("main", "blind")):
    return {name: tables[name].copy() for name in names}


def test_the_committed_tables_reproduce_themselves_exactly(committed):
    result = check.compare(committed, _copy(committed))
    judged = committed["main"]["verdict"].notna().sum()
    assert result.ok and len(result.verdicts) == judged > 0 and len(result.flipped) == 0
    assert result.largest_delta == 0.0 and not result.differing and not result.missing
    assert len(result.claims) == len(report.verdicts(_copy(committed))) > 0
    assert result.not_rerun == sorted(set(committed) - {"main", "blind"})  # ablations, map, transfer
    assert result.summary_line().startswith(f"{judged} of {judged} verdicts identical and {len(result.claims)} of "
                                            f"{len(result.claims)} claims (tables blind, main; ablations, map, "
                                            "transfer not run)")
    assert result.summary_line().endswith(f"reproduced, within the tolerances for float differences across CPUs "
                                          f"({check.TOLERANCE:g}, {check.P_TOLERANCE:g})")


def test_float_differences_within_the_tolerance_are_not_a_failure(committed):
    run = _copy(committed)
    run["main"]["delta"] += 0.004
    run["blind"]["auc"] -= 0.002
    result = check.compare(committed, run)
    assert result.ok and result.largest_delta == pytest.approx(0.004)
    assert "largest |Δ| 0.0040 of an estimate" in result.summary_line() and result.summary_line().endswith(")")


def test_a_number_beyond_the_tolerance_is_reported(committed):
    run = _copy(committed)
    row = run["main"].index[run["main"]["verdict"].notna()][0]
    run["main"].loc[row, "lo"] -= 0.05
    result = check.compare(committed, run)
    assert not result.ok and len(result.differing) == 1 and " lo " in result.differing[0]
    assert len(result.flipped) == 0 and "NOT REPRODUCED" in result.summary_line()


def test_p_values_have_their_own_tolerance(committed):
    run = _copy(committed)
    run["main"]["p"] = run["main"]["p"] + check.P_TOLERANCE / 2
    result = check.compare(committed, run)
    assert result.ok and result.largest_delta == 0.0 and result.p_delta == pytest.approx(check.P_TOLERANCE / 2)
    assert f"{check.P_TOLERANCE / 2:.4f} of a p-value" in result.summary_line()
    run["main"].loc[0, "p_adjusted"] = 2.0
    result = check.compare(committed, run)
    assert not result.ok and [d for d in result.differing if " p_adjusted " in d]


def test_labels_and_verdicts_that_appear_are_differences(committed):
    run = _copy(committed)
    run["main"].loc[0, "correction"] = "bh"
    result = check.compare(committed, run)
    assert not result.ok and [d for d in result.differing if "correction holm -> bh" in d]
    run = _copy(committed)
    unjudged = run["main"].index[run["main"]["verdict"].isna()][0]
    run["main"].loc[unjudged, "verdict"] = "up"
    result = check.compare(committed, run)
    assert len(result.flipped) == 1 and not result.ok, "a verdict the committed row lacks is a flip too"


def test_tables_that_do_not_match_in_shape_are_errors(committed):
    run = _copy(committed)
    run["main"] = pd.concat([run["main"], run["main"].iloc[:1]])
    with pytest.raises(ValueError, match="run's table"):
        check.compare(committed, run)
    run = _copy(committed)
    run["main"] = run["main"].drop(columns=["attack"])
    with pytest.raises(ValueError, match="lacks the columns"):
        check.compare(committed, run)


def test_runs_computed_at_another_commit_are_stale(tmp_path):
    for name, commit in (("01_pretrain_target", "old"), ("11_s2l_main", "def"), ("11_s2l_main.failed", "x"),
                         ("14_report", "abc")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.json").write_text(f'{{"git_commit": "{commit}"}}')
    assert check.stale_runs(tmp_path, "abc") == ["11_s2l_main at def"], "only the runs the report reads"
    assert check.stale_runs(tmp_path, None) == [], "no checkout: nothing to compare with"


def test_counts_must_be_equal_exactly(committed):
    run = _copy(committed)
    run["blind"]["cells"] += 1
    result = check.compare(committed, run)
    assert [d for d in result.differing if " cells " in d] and not result.ok


def test_a_flipped_verdict_fails_and_is_marked(committed):
    run = _copy(committed)
    main = run["main"]
    judged = main.index[(main["verdict"] == "no change") & (main["comparison"] == experiment.EFFECT)]
    main.loc[judged[0], "verdict"] = "up"
    result = check.compare(committed, run)
    assert not result.ok and len(result.flipped) == 1
    text = check.render(result)
    assert "!! main: " in text and "1 verdict(s) flipped" in text.splitlines()[-1]


def test_a_claim_whose_agreement_flips_fails(committed):
    run = _copy(committed)
    main = run["main"]
    strength = (main["comparison"] == experiment.EFFECT) & (main["metric"] == "advantage")
    main.loc[strength, "verdict"] = "up"  # every MIA effect up: the claims now agree with the paper
    result = check.compare(committed, run)
    assert len(result.flipped_claims) >= 1 and not result.ok
    assert (result.flipped_claims["committed"] != result.flipped_claims["reproduced"]).all()


def test_missing_and_extra_rows_are_reported(committed):
    run = _copy(committed)
    run["main"] = pd.concat([run["main"].iloc[1:], run["main"].iloc[:1].assign(method="ghost")])
    result = check.compare(committed, run)
    assert not result.ok and len(result.missing) == 2
    assert any("not reproduced" in m for m in result.missing) and any("extra" in m for m in result.missing)


def test_the_command_exits_by_the_result_and_writes_nothing(committed, tmp_path, capsys):
    run_dir = tmp_path / "run"
    notebook.write_tables(_copy(committed), run_dir)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert check.main(["--run", str(run_dir), "--committed", str(COMMITTED)]) == 0
    assert "verdicts identical" in capsys.readouterr().out.splitlines()[-1]
    flipped = _copy(committed)
    flipped["main"].loc[flipped["main"]["verdict"].notna().idxmax(), "verdict"] = "down?"
    notebook.write_tables(flipped, run_dir)
    assert check.main(["--run", str(run_dir), "--committed", str(COMMITTED)]) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert check.main(["--run", str(tmp_path / "none"), "--committed", str(COMMITTED)]) == 2
    assert "reproduced none" in capsys.readouterr().err
    assert check.main(["--run", str(run_dir), "--committed", str(tmp_path / "none")]) == 0, "sd: nothing committed"
    assert "nothing to compare" in capsys.readouterr().out


def test_csv_tables_round_trip_through_write_tables(committed, tmp_path):
    notebook.write_tables(_copy(committed), tmp_path)
    for name in ("main", "blind"):
        assert (tmp_path / f"{name}.csv").read_bytes() == (COMMITTED / f"{name}.csv").read_bytes()


def test_atomic_writes_leave_no_temporary_file_and_ordinary_permissions(tmp_path):
    import os

    from s2l_utils import notebook

    path = notebook.write_text(tmp_path / "a" / "page.md", "text")
    assert path.read_text() == "text" and [p.name for p in path.parent.iterdir()] == ["page.md"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(TypeError):
        notebook.write_json(tmp_path / "a" / "page.md", {"x": object()})
    assert path.read_text() == "text" and [p.name for p in path.parent.iterdir()] == ["page.md"], "kept whole"
