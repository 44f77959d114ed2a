"""The study's shards: one sweep file each (``sweeps/regimes_*.yaml``); a finished shard's collected raw scores and
extraction matches are published to ``data/results/regimes/<shard>.parquet`` with a record of its cost in
``shards.json`` (``publish``), and read back with each row's world as keys (``load``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .. import experiment, paths, report, store, sweep
from ..config import ConfigError
from ..notebook import PARAMS_FILE, write_json
from . import worlds

WORLDS = ("regimes_duplicated", "regimes_iid", "regimes_duplicated_shift", "regimes_iid_shift")
# each world in two shards of 6 points (about 80 minutes each on 2 cores), each run and committed on its own
SHARDS = tuple(f"{world}_{part}" for world in WORLDS for part in ("lora_dreambooth", "ti_dblora"))
ZERO_KNOWLEDGE = "regimes_zero_knowledge"
# H4: the wider target, duplicated world, SP guidance 3, every method (two shards: its cells cost about 3x the grid's)
CAPACITY = tuple(f"regimes_capacity_{part}" for part in ("lora_dreambooth", "ti_dblora"))
SHARDS_FILE = "shards.json"
STORED_REGIME = (worlds.LABEL, "nonmember_shift", "sp_guidance")  # the regime columns a shard stores per row


def results_dir() -> Path:
    """Where published shards, the pre-registration and the study's tables live."""
    return paths.data_dir() / "results" / "regimes"


def preregistration() -> str:
    """The pre-registered hypotheses, as committed before the grid ran (read, never rewritten)."""
    return (paths.repo_root() / "data" / "results" / "regimes" / "preregistration.md").read_text()


def publish(sweep_file: str | Path, folder: Path | None = None, allow_dirty: bool = False, log=print) -> Path:
    """Copy a finished shard's collected table (every point done) to ``folder/<shard>.parquet``, each run's rows
    labelled with the regime its own ``params.json`` records, and record in ``folder/shards.json`` the commit(s)
    the runs recorded (refused when unknown or "+dirty", unless ``allow_dirty``), the cells, the fine-tuned models,
    how many of them each kind of lender lent (``store.LENDER_KINDS``) and their evaluation seconds (each
    model's ``cell.json``, refused when missing)."""
    shard = sweep.load_sweep(sweep_file)
    unfinished = [p for p in shard.points() if sweep.point_state(shard, p) != "done"]
    if unfinished:
        raise ConfigError(f"shard {shard.name}: {len(unfinished)} of {len(shard.points())} points are not done; "
                          f"run python -m s2l_utils.sweep {shard.path} --jobs 2 first")
    collected = sweep.collect(shard, log=log)
    runs = {run_dir: json.loads((Path(run_dir) / PARAMS_FILE).read_text()) for run_dir in collected["run_dir"].unique()}
    commits = sorted({str(run["git_commit"]) for run in runs.values()})
    if not allow_dirty and any(c == "None" or c.endswith("+dirty") for c in commits):
        raise ConfigError(f"shard {shard.name} was computed at {commits}: publish only runs of committed code")
    regime = {run_dir: (worlds.label(*worlds.world_of(run["params"])), run["params"]["nonmember_shift"],
                        run["params"]["sp_guidance"]) for run_dir, run in runs.items()}
    labels = pd.DataFrame(collected["run_dir"].map(regime).tolist(), columns=list(STORED_REGIME),
                          index=collected.index)
    stale = [c for c in (*STORED_REGIME, "member_duplicates") if c in collected]
    collected = collected.drop(columns=stale).join(labels)
    table = pd.concat([report.sweep_part(collected, name).assign(table=name) for name in report.SWEEP_TABLES],
                      ignore_index=True)
    tuned = table.loc[table["condition"] != experiment.BEFORE, ["cell", "condition"]].drop_duplicates()
    infos = [paths.cache_dir("cells") / c / k / store.CELL_INFO for c, k in tuned.itertuples(index=False)]
    missing = [str(info) for info in infos if not info.is_file()]
    if missing:
        raise FileNotFoundError(f"shard {shard.name}: {len(missing)} fine-tuned models lack their {store.CELL_INFO} "
                                f"(e.g. {missing[0]}): publish where the shard ran")
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{shard.name}.parquet"
    sweep.replace_atomically(out, lambda tmp: table.to_parquet(tmp, index=False, compression="zstd"))
    models = [json.loads(info.read_text()) for info in infos]
    record = shard_records(folder)
    record[shard.name] = {"commit": ", ".join(commits), "points": len(shard.points()),
                          "cells": int(table["cell"].nunique()), "finetuned_models": len(tuned),
                          **{f"lent_by_{kind}": sum(bool(m.get(kind)) for m in models) for kind in store.LENDER_KINDS},
                          "model_seconds": round(sum(m["seconds"] for m in models)), "rows": len(table)}
    write_json(folder / SHARDS_FILE, record)
    log(f"published {shard.name}: {record[shard.name]} -> {out}")
    return out


def shard_records(folder: Path | None = None) -> dict:
    """What ``publish`` recorded per shard (commit, cells, fine-tuned models, seconds); empty before any."""
    path = (folder or results_dir()) / SHARDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def load(folder: Path | None = None, shards=SHARDS + CAPACITY) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(scores, matches, names) of the published shards among ``shards`` in ``folder``, each row's world as the
    keys ``worlds.DATA`` and ``worlds.TARGET``; raises FileNotFoundError when none is published."""
    folder = folder or results_dir()
    names = [name for name in shards if (folder / f"{name}.parquet").is_file()]
    if not names:
        raise FileNotFoundError(f"no published shard of {list(shards)} in {folder}: run `make regimes` (or a "
                                f"sweep, then python -m s2l_utils.regimes publish <sweep file>)")
    table = pd.concat([pd.read_parquet(folder / f"{name}.parquet") for name in names], ignore_index=True)
    scores, matches = (worlds.with_keys(report.sweep_part(table, name)) for name in report.SWEEP_TABLES)
    return scores, matches, names


def load_zero_knowledge(folder: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(scores, matches) of the zero-knowledge shard (``load``), or None while it is not published."""
    folder = folder or results_dir()
    if not (folder / f"{ZERO_KNOWLEDGE}.parquet").is_file():
        return None
    scores, matches, _ = load(folder, [ZERO_KNOWLEDGE])
    return scores, matches
