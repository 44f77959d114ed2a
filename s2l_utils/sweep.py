"""Sweeps: a YAML grid over notebook parameters, run through the runner, resumable and shardable.

``python -m s2l_utils.sweep sweeps/methods.yaml [--shard i/n] [--jobs N] [--force] [--collect-only] [--list]``

A sweep file::

    description: free text
    profile: mini              # profile name or YAML path (default mini)
    notebooks: [11_s2l_main]   # names or .ipynb paths (relative to the sweep file's folder or the cwd)
    fixed: {ft_steps: 100}     # overrides of every run (optional)
    grid:                      # cartesian product, in file order; each key a parameter, each value a list
      method: [lora, dreambooth]
      seed: [0, 1, 2]
    tables: [results]          # parquet tables to collect (optional; default every *.parquet of the runs)

Every point is one ``run.run(profile, notebooks, overrides)`` (``runs/<profile>-<hash of overrides>/<notebook>/``),
and everything is validated before anything runs. A rerun skips finished points and retries failed ones (each
recorded in ``runs/sweeps/<name>/status-<i>of<n>.json``); ``--shard i/n`` runs every n-th point from the i-th;
``--jobs N`` runs N points at once with an equal share of the CPU threads each; every invocation then collects the
finished runs of the whole grid into ``runs/sweeps/<name>/results.parquet`` (and ``.csv``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from tqdm.auto import tqdm

from . import paths, run
from .config import ConfigError, check_names, load_profile, profile_values
from .notebook import METRICS_FILE, write_json

SWEEP_KEYS = ("description", "profile", "notebooks", "fixed", "grid", "tables")


@dataclass
class Sweep:
    """A validated sweep file."""

    name: str
    profile: str
    notebooks: list[Path]
    fixed: dict
    grid: dict
    tables: list[str] | None
    path: Path

    def points(self) -> list[dict]:
        """The overrides of every grid point: ``fixed`` plus one value of each grid key, in file order."""
        keys = list(self.grid)
        return [{**self.fixed, **dict(zip(keys, values, strict=True))}
                for values in itertools.product(*self.grid.values())]

    def run_root(self, point: dict) -> Path:
        return run.run_root(self.profile, point)

    @property
    def out_dir(self) -> Path:
        return paths.runs_dir() / "sweeps" / self.name


def _near(name: str, folder: Path) -> str:
    """A relative file path as seen from the sweep file's folder when it exists there, else unchanged."""
    candidate = folder / name
    return str(candidate.resolve()) if not Path(name).is_absolute() and candidate.is_file() else name


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; raises ``ConfigError`` before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep {path} must be a mapping with keys {', '.join(SWEEP_KEYS)}")
    check_names(raw, SWEEP_KEYS, where=f"keys in sweep {path.name}")
    fixed, grid = raw.get("fixed") or {}, raw.get("grid") or {}
    if not isinstance(fixed, dict) or not isinstance(grid, dict):
        raise ConfigError(f"sweep {path.name}: 'fixed' and 'grid' must map parameter names to values")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep {path.name}: grid values of {name!r} must be a non-empty list, got {values!r}")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f"sweep {path.name}: {', '.join(both)} both fixed and in the grid")
    notebooks = raw.get("notebooks") or []
    tables = raw.get("tables")
    if not isinstance(notebooks, list) or not notebooks or (tables is not None and not isinstance(tables, list)):
        raise ConfigError(f"sweep {path.name}: 'notebooks' must be a non-empty list and 'tables' a list")
    profile = _near(str(raw.get("profile", "mini")), path.parent)
    profile_values(profile)
    selected = run.resolve_notebooks([_near(str(nb), path.parent) for nb in notebooks])
    run.check_overrides({**fixed, **grid}, selected)
    sweep = Sweep(path.stem, profile, selected, fixed, grid, tables, path)
    for point in sweep.points():
        load_profile(profile, **point)
    return sweep


def parse_shard(spec: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``."""
    index, sep, count = spec.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()):
        raise ConfigError(f"shard {spec!r} must look like i/n, e.g. 2/3")
    return int(index), int(count)


def shard(points: list, index: int, count: int) -> list:
    """The points of shard ``index`` of ``count`` (1-based, round-robin): n shards partition the points."""
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ConfigError(f"shard {index}/{count} must satisfy 1 <= i <= n")
    return points[index - 1::count]


def _run_point(profile: str, notebooks: list[str], point: dict, force: bool, log=print) -> dict:
    """Run one point; the record of the status file (failures are recorded, not raised)."""
    root = run.run_root(profile, point)
    finished = all((root / Path(nb).stem / METRICS_FILE).is_file() for nb in notebooks)
    state, error, begin = ("done" if force or not finished else "skipped"), None, time.perf_counter()
    try:
        run.run(profile, notebooks, point, force=force, log=log)
    except Exception as exc:
        state, error = "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()
        log(f"failed {root.name}: {error.splitlines()[0] if error else type(exc).__name__}")
    return {"point": point, "run_root": str(root), "state": state, "error": error,
            "seconds": round(time.perf_counter() - begin, 2)}


def share_threads(jobs: int) -> None:
    """In a worker process: ``OMP_NUM_THREADS`` = this machine's cores / ``jobs`` (at least 1), inherited by the
    notebook kernels it starts; a value the user set is kept."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))


def run_sweep(sweep: Sweep, shard_spec: tuple[int, int] = (1, 1), jobs: int = 1, force: bool = False,
              log=print) -> pd.DataFrame:
    """Run the points of one shard (``jobs`` at a time, each in its own process when > 1); the status table."""
    index, count = shard_spec
    points = shard(sweep.points(), index, count)
    notebooks = [str(nb) for nb in sweep.notebooks]
    status_file = sweep.out_dir / f"status-{index}of{count}.json"
    records: dict[int, dict] = {}

    def record(i: int, rec: dict) -> None:
        records[i] = rec
        write_json(status_file, [records[k] for k in sorted(records)])

    bar = tqdm(total=len(points), desc=f"sweep {sweep.name} {index}/{count}", unit="point")
    with bar:
        if jobs <= 1:
            for i, point in enumerate(points):
                record(i, _run_point(sweep.profile, notebooks, point, force, log))
                bar.update()
        else:
            with ProcessPoolExecutor(jobs, initializer=share_threads, initargs=(jobs,)) as pool:
                futures = {pool.submit(_run_point, sweep.profile, notebooks, point, force): i
                           for i, point in enumerate(points)}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        rec = future.result()
                    except Exception as exc:  # the worker process itself died
                        rec = {"point": points[i], "run_root": str(sweep.run_root(points[i])), "state": "failed",
                               "error": f"{type(exc).__name__}: {exc}", "seconds": None}
                    record(i, rec)
                    bar.update()
    columns = [*sweep.fixed, *sweep.grid, "run_root", "state", "error", "seconds"]
    return pd.DataFrame([{**r["point"], **{k: v for k, v in r.items() if k != "point"}}
                         for r in (records[k] for k in sorted(records))], columns=columns)


def point_state(sweep: Sweep, point: dict) -> str:
    """``done`` when every notebook finished, ``failed`` when one has a failed run, else ``pending``."""
    root = sweep.run_root(point)
    if all((root / nb.stem / METRICS_FILE).is_file() for nb in sweep.notebooks):
        return "done"
    if any((root / f"{nb.stem}{run.FAILED_SUFFIX}").is_dir() for nb in sweep.notebooks):
        return "failed"
    return "pending"


def replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it over ``path``: readers never see half a
    file, and a failed write leaves the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def collect(sweep: Sweep, log=print) -> pd.DataFrame:
    """One table of every finished run of the whole grid, with the point's values, ``run_dir``, ``notebook``
    and ``table`` as columns (a table's own column of the same name wins); written beside the status files."""
    frames, missing = [], []
    for point in sweep.points():
        root = sweep.run_root(point)
        for nb in sweep.notebooks:
            folder = root / nb.stem
            if not (folder / METRICS_FILE).is_file():
                missing.append(f"{folder.parent.name}/{nb.stem}")
                continue
            names = sweep.tables or sorted(p.stem for p in folder.glob("*.parquet"))
            for name in names:
                table = folder / f"{name}.parquet"
                if not table.is_file():
                    missing.append(f"{folder.parent.name}/{nb.stem}/{name}.parquet")
                    continue
                df = pd.read_parquet(table)
                extra = {**point, "run_dir": str(folder), "notebook": nb.stem, "table": name}
                for column, value in extra.items():
                    if column not in df.columns:
                        df[column] = [value] * len(df)
                frames.append(df)
    if missing:
        log(f"missing ({len(missing)}): {', '.join(missing)}")
    if not frames:
        raise FileNotFoundError(f"sweep {sweep.name}: no finished run with tables yet")
    results = pd.concat(frames, ignore_index=True)
    sweep.out_dir.mkdir(parents=True, exist_ok=True)
    replace_atomically(sweep.out_dir / "results.parquet", lambda p: results.to_parquet(p, index=False))
    replace_atomically(sweep.out_dir / "results.csv", lambda p: results.to_csv(p, index=False))
    log(f"collected {len(results)} rows from {len(frames)} tables -> {sweep.out_dir / 'results.parquet'}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("--shard", default="1/1", help="run shard i of n (1-based), e.g. 2/3 (default 1/1)")
    parser.add_argument("--jobs", type=int, default=1, help="points run at once, each in its own process")
    parser.add_argument("--force", action="store_true", help="rerun points that already finished")
    parser.add_argument("--collect-only", action="store_true", help="only collect finished results")
    parser.add_argument("--list", action="store_true", help="list the shard's points, run folders and states")
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
        index, count = parse_shard(args.shard)
        points = shard(sweep.points(), index, count)
        if args.list:
            for point in points:
                print(f"{point_state(sweep, point):8} {sweep.run_root(point)}  {point}")
            return 0
        failed = 0
        if not args.collect_only:
            states = run_sweep(sweep, (index, count), jobs=args.jobs, force=args.force)["state"]
            failed = int((states == "failed").sum())
            print(f"shard {index}/{count}:", ", ".join(f"{n} {s}" for s, n in states.value_counts().items()) or "empty")
        collect(sweep)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # nothing finished yet
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
