"""Sweeps: validation before anything runs, exact sharding, failures recorded, resume after a kill, the CLI.

The notebooks here are tiny throwaways (read the profile, write metrics.json and a one-row table), so the
tests exercise the real runner and papermill in seconds.
"""

import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from s2l_utils import paths, sweep
from s2l_utils.config import ConfigError, load_profile

BODY = """
import json, os, pathlib
import pandas as pd
from s2l_utils.config import load_profile

p = load_profile(profile, seed=seed, method=method, ft_steps=ft_steps)
with open({counter!r}, "a") as f:
    f.write(f"{{p.seed}} {{p.method}}\\n")
with open({counter!r} + ".threads", "a") as f:
    f.write(os.environ.get("OMP_NUM_THREADS", "unset") + "\\n")
if p.seed == 13:
    raise ValueError("unlucky seed 13")
out = pathlib.Path(run_dir)
pd.DataFrame({{"auc": [0.5 + p.seed / 100], "method_used": [p.method]}}).to_parquet(out / "results.parquet")
(out / "metrics.json").write_text(json.dumps({{"seed": p.seed}}))
"""


@pytest.fixture
def make_sweep(tmp_path):
    """Write a throwaway notebook and a sweep file using it; returns (write(name, **spec), counter file)."""
    counter = tmp_path / "ran.txt"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
    params = nbformat.v4.new_code_cell('profile = "mini"\nrun_dir = ""\nseed = None\nmethod = None\nft_steps = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(BODY.format(counter=str(counter)))]
    nbformat.write(nb, tmp_path / "toy.ipynb")

    def write(name, **spec):
        spec = {"profile": "mini", "notebooks": ["toy.ipynb"], **spec}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write, counter


def runs_made():
    return sorted(p.name for p in paths.runs_dir().glob("mini-*"))


def test_shards_partition_the_grid_exactly(make_sweep):
    write, _ = make_sweep
    s = sweep.load_sweep(write("grid", grid={"method": ["lora", "dreambooth"], "seed": [0, 1, 2]},
                               fixed={"ft_steps": 5}))
    points = s.points()
    assert len(points) == 6 and points[0] == {"ft_steps": 5, "method": "lora", "seed": 0}
    assert points == s.points()
    keys = [json.dumps(p, sort_keys=True) for p in points]
    for n in (1, 2, 3, 4, 6, 7, 10):
        shards = [[json.dumps(p, sort_keys=True) for p in sweep.shard(points, i, n)] for i in range(1, n + 1)]
        assert sorted(k for part in shards for k in part) == sorted(keys)
        assert sum(map(len, shards)) == len(keys) == len(set(keys))
    assert sweep.parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ConfigError):
            sweep.shard(points, *sweep.parse_shard(bad))


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"seed": [1]}, "gird": {}}, "gird"),
    ({"grid": {"seeds": [1]}}, "seeds"),
    ({"grid": {"lora_rank": [2]}}, "not declared"),
    ({"grid": {"seed": []}}, "non-empty"),
    ({"grid": {"seed": 3}}, "non-empty"),
    ({"grid": {"seed": [1]}, "fixed": {"seed": 2}}, "both"),
    ({"grid": {"ft_steps": [10, 0]}}, "ft_steps"),
])
def test_bad_sweeps_are_rejected_before_anything_runs(make_sweep, spec, message):
    write, counter = make_sweep
    before = runs_made()
    with pytest.raises(ConfigError, match=message):
        sweep.load_sweep(write("bad", **spec))
    assert runs_made() == before and not counter.exists()


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(make_sweep):
    write, _ = make_sweep
    s = sweep.load_sweep(write("fails", grid={"seed": [1, 13, 2]}, fixed={"method": "full"}, tables=["results"]))
    status = sweep.run_sweep(s, log=lambda *_: None)
    assert list(status["state"]) == ["done", "failed", "done"]
    assert "unlucky seed 13" in status["error"][1]
    recorded = json.loads((s.out_dir / "status-1of1.json").read_text())
    assert [r["state"] for r in recorded] == ["done", "failed", "done"] and recorded[1]["point"]["seed"] == 13
    assert [sweep.point_state(s, p) for p in s.points()] == ["done", "failed", "done"]
    results = sweep.collect(s, log=lambda *_: None)
    assert sorted(results["seed"]) == [1, 2] and set(results["method"]) == {"full"}
    assert set(results["table"]) == {"results"} and set(results["notebook"]) == {"toy"}
    assert results["auc"].tolist() == pytest.approx([0.51, 0.52])
    assert pd.read_parquet(s.out_dir / "results.parquet").shape == results.shape
    assert (s.out_dir / "results.csv").is_file()


def test_a_killed_sweep_resumes_without_redoing_finished_runs(make_sweep):
    write, counter = make_sweep
    s = sweep.load_sweep(write("resume", grid={"seed": [3, 4, 5]}))
    seen = []

    def kill_at_second_point(message):
        seen.append(message)
        if message.startswith("run") and sum(m.startswith("run") for m in seen) == 2:
            raise KeyboardInterrupt  # the temp folder .toy.running exists now, as after a real kill

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(s, log=kill_at_second_point)
    first = s.run_root(s.points()[0]) / "toy" / "metrics.json"
    mtime = first.stat().st_mtime_ns
    assert (s.run_root(s.points()[1]) / ".toy.running").is_dir()
    assert [sweep.point_state(s, p) for p in s.points()] == ["done", "pending", "pending"]

    status = sweep.run_sweep(s, log=lambda *_: None)
    assert list(status["state"]) == ["skipped", "done", "done"]
    assert first.stat().st_mtime_ns == mtime
    assert counter.read_text().split("\n")[:-1] == ["3 lora", "4 lora", "5 lora"]  # each point ran exactly once
    assert not (s.run_root(s.points()[1]) / ".toy.running").exists()
    assert sorted(sweep.collect(s, log=lambda *_: None)["seed"]) == [3, 4, 5]


def test_cli_lists_points_and_rejects_a_bad_shard(make_sweep, capsys):
    write, counter = make_sweep
    path = str(write("cli", grid={"seed": [7, 8, 9]}))
    assert sweep.main([path, "--list", "--shard", "2/2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pending") and "'seed': 8" in lines[0]
    assert sweep.main([path, "--shard", "0/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert sweep.main([path, "--collect-only"]) == 1  # nothing finished yet
    assert not counter.exists()
    assert sweep.main([path, "--shard", "2/2"]) == 0 and counter.read_text() == "8 lora\n"
    assert "collected 1 rows" in capsys.readouterr().out
    assert sweep.main([path, "--list"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["pending", "done", "pending"]


def test_parallel_jobs_run_each_point_in_its_own_process(make_sweep, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    write, counter = make_sweep
    s = sweep.load_sweep(write("parallel", grid={"seed": [21, 13]}))
    status = sweep.run_sweep(s, jobs=2)
    assert list(status["state"]) == ["done", "failed"] and "unlucky seed 13" in status["error"][1]
    assert sorted(counter.read_text().split()) == sorted(["21", "13", "lora", "lora"])
    # each job's kernel gets its share of the cores, so two jobs do not oversubscribe them
    share = str(max(1, (os.cpu_count() or 1) // 2))
    assert Path(f"{counter}.threads").read_text().split() == [share, share]


SHIPPED = sorted((paths.repo_root() / "sweeps").glob("*.yaml"))
REGIME_SHARDS = [p for p in SHIPPED if p.stem.startswith("regimes_")]


@pytest.mark.parametrize("path", [p for p in SHIPPED if p not in REGIME_SHARDS], ids=lambda p: p.stem)
def test_shipped_sweeps_load_and_cover_their_profiles_cells(path):
    """Each shipped sweep validates, and its points together cover the profile's methods x seeds exactly once,
    so the notebook run after it reads every cell back instead of computing it."""
    loaded = sweep.load_sweep(path)
    profile = load_profile(loaded.profile)
    covered = [(m, s) for point in loaded.points() for m in point.get("methods", profile.methods)
               for s in point.get("seeds", profile.seeds)]
    assert sorted(covered) == sorted((m, s) for m in profile.methods for s in profile.seeds)


def test_the_regime_shards_are_the_studys_and_differ_only_in_their_world():
    """Notebook 15 reads the shards by name, and its contrasts pair cells across shards: every world runs the same
    methods x guidance x seeds x conditions, split in two shards by method."""
    from s2l_utils import regimes

    assert sorted(p.stem for p in REGIME_SHARDS) == sorted([*regimes.SHARDS, regimes.ZERO_KNOWLEDGE,
                                                            *regimes.CAPACITY])
    grids = {p.stem: sweep.load_sweep(p) for p in REGIME_SHARDS if p.stem in regimes.SHARDS}
    worlds = {}
    for name, loaded in grids.items():
        assert loaded.grid["sp_guidance"] == [1.0, 3.0, 7.5] and len(loaded.points()) == 6, name
        fixed = dict(loaded.fixed)
        world = (tuple(fixed.pop("member_duplicates")), fixed.pop("nonmember_shift"))
        worlds.setdefault(world, []).extend(m for [m] in loaded.grid["methods"])
        assert fixed == {"seeds": [0, 1], "conditions": ["s2l", "cross_domain", "real_nonmember"]}, name
    assert set(worlds) == {((32, 16, 8, 4), 0.0), ((), 0.0), ((32, 16, 8, 4), 0.5), ((), 0.5)}
    assert all(sorted(m) == ["dreambooth", "dreambooth_lora", "lora", "textual_inversion"] for m in worlds.values())
    # H4's shards: the grid's duplicated world and conditions on the wider target, at H4's guidance, every method
    methods = []
    for name in regimes.CAPACITY:
        capacity = sweep.load_sweep(paths.repo_root() / "sweeps" / f"{name}.yaml")
        fixed = dict(capacity.fixed)
        assert (tuple(fixed.pop("member_duplicates")), fixed.pop("nonmember_shift")) == ((32, 16, 8, 4), 0.0)
        assert tuple(fixed.pop("unet_channels")) == regimes.WIDE_CHANNELS
        assert fixed.pop("sp_guidance") == regimes.H4_GUIDANCE
        assert fixed == {"seeds": [0, 1], "conditions": ["s2l", "cross_domain", "real_nonmember"]}, name
        methods += [m for [m] in capacity.grid["methods"]]
    assert sorted(methods) == ["dreambooth", "dreambooth_lora", "lora", "textual_inversion"]
