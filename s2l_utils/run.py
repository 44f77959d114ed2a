"""Run notebooks with papermill under a profile: ``python -m s2l_utils.run --profile mini [notebooks…]``.

Each notebook runs in a fresh kernel into ``runs/<profile>/<notebook>/`` (``params.json``, ``metrics.json``,
the executed notebook, figures, tables). A run is written into a temporary folder and renamed into place
only when it succeeded, so a finished-looking folder is always complete; a failed run is kept beside it as
``<notebook>.failed/`` with ``error.txt``. Finished runs are skipped unless ``--force``.

``-p name=value`` overrides a parameter (YAML syntax: ``-p unet_channels=[16,32]``). It must be declared by
one of the notebooks being run, or define the data or the target (``data_dir``, ``domains_file``, the world's
and the target's parameters), which every notebook reads. Overrides make an *effective profile*
(``runs/<profile>-<hash>/profile.yaml``) that every notebook of the run reads, so a changed world or target is
seen downstream too.

While a cell runs, the progress bar names it and, every ``HEARTBEAT_SECONDS``, how long it has been running.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import paths
from .config import ConfigError, Params, check_names, load_profile, profile_values
from .notebook import METRICS_FILE, profile_name, write_json

FAILED_SUFFIX = ".failed"
SETUP_NOTEBOOK = "00_setup"  # its parameters are the world's
HEARTBEAT_SECONDS = 30
ENGINE = "s2l_heartbeat"
# the kernel runs on this machine's loopback, so its start-up warning about unencrypted TCP tells the user nothing;
# the kernel application's own log is kept for errors (cell output and Python warnings are unaffected)
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def available_notebooks() -> list[Path]:
    return sorted(paths.notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def resolve_notebooks(names: list[str]) -> list[Path]:
    """Notebook paths from names such as ``01``, ``01_pretrain_target`` or a path; all when ``names`` is empty."""
    known = available_notebooks()
    if not names:
        return known
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        matches = [nb for nb in known if nb.stem == name or nb.stem.split("_")[0] == name]
        if len(matches) != 1:
            raise ConfigError(f"unknown notebook {name!r}. Available: {', '.join(nb.stem for nb in known)}")
        chosen.append(matches[0])
    return chosen


def declared_parameters(notebook: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"override {pair!r} must look like name=value")
        overrides[name.strip()] = yaml.safe_load(raw)
    return overrides


def data_and_target_parameters() -> set[str]:
    """Parameters that define the data or the target: the set-up notebook's (the world), ``base_model`` and every
    parameter of the target's weights. Every notebook reads them through the effective profile
    (``world.load_data``, ``pretrain.load_target``), so they may be overridden whichever notebooks run."""
    from .pretrain import TARGET_KNOBS, TARGET_PARAMS

    setup = paths.notebooks_dir() / f"{SETUP_NOTEBOOK}.ipynb"
    return {*declared_parameters(setup), "base_model", *TARGET_PARAMS, *TARGET_KNOBS} - {"profile", "run_dir"}


def check_overrides(overrides: dict, notebooks: list[Path]) -> None:
    """Every override must be a known parameter, declared by at least one of the notebooks being run or one of
    the ``data_and_target_parameters``."""
    check_names(overrides)
    declared = {nb.stem: declared_parameters(nb) for nb in notebooks}
    undeclared = sorted(set(overrides) - set().union(*declared.values()))
    unused = sorted(set(undeclared) - data_and_target_parameters()) if undeclared else []
    if unused:
        listing = "; ".join(f"{nb}: {', '.join(sorted(names - {'profile', 'run_dir'}))}"
                            for nb, names in declared.items())
        raise ConfigError(f"parameter {unused[0]!r} is not declared by the notebooks being run ({listing}) and "
                          "does not define the data or the target")


def run_root(profile: str, overrides: dict) -> Path:
    """``runs/<profile>``, or ``runs/<profile>-<hash of overrides>`` holding the effective ``profile.yaml``."""
    base = paths.runs_dir() / profile_name(profile)
    if not overrides:
        return base
    effective = load_profile(profile, **overrides)
    return base.with_name(f"{base.name}-{effective.digest(*sorted(overrides))}")


def running_cell(nb, now: datetime) -> str | None:
    """"cell 6/14 running for 2m30s" for the cell papermill marks as running in ``nb``; None between cells."""
    for index, cell in enumerate(nb.cells):
        state = cell.get("metadata", {}).get("papermill", {})
        if state.get("status") == "running" and state.get("start_time"):
            seconds = int((now - datetime.fromisoformat(state["start_time"])).total_seconds())
            elapsed = f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
            return f"cell {index + 1}/{len(nb.cells)} running for {elapsed}"
    return None


def heartbeat(nb_man, stop: threading.Event, every: float = HEARTBEAT_SECONDS) -> None:
    """Until ``stop`` is set, show the running cell's elapsed time in papermill's progress bar every ``every``
    seconds: one in-place update of the bar (one line per beat in a log), not a stream of the cell's output."""
    while not stop.wait(every):
        if nb_man.pbar is not None:
            nb_man.pbar.set_postfix_str(running_cell(nb_man.nb, datetime.now(timezone.utc)) or "")


@functools.cache
def _register_heartbeat_engine() -> None:
    """papermill's nbclient engine with a ``heartbeat`` thread beside each execution, as engine ``ENGINE``."""
    from papermill.engines import NBClientEngine, papermill_engines

    class HeartbeatEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            stop = threading.Event()
            beat = threading.Thread(target=heartbeat, args=(nb_man, stop, HEARTBEAT_SECONDS), daemon=True)
            beat.start()
            try:
                return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)
            finally:
                stop.set()
                beat.join()

    papermill_engines.register(ENGINE, HeartbeatEngine)


def execute(notebook: Path, profile_arg: str, root: Path, force: bool = False, timeout: int | None = None,
            log=print) -> Path:
    """Execute one notebook into ``root/<stem>``; returns the run folder. Raises on failure (kept as .failed)."""
    import papermill

    _register_heartbeat_engine()
    final = root / notebook.stem
    if (final / METRICS_FILE).is_file() and not force:
        log(f"skip {notebook.stem}: finished run at {final} (use --force to rerun)")
        return final
    tmp = root / f".{notebook.stem}.running"
    failed = root / f"{notebook.stem}{FAILED_SUFFIX}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"run  {notebook.stem} -> {final}")
    try:
        papermill.execute_notebook(str(notebook), str(tmp / notebook.name),
                                   parameters={"profile": profile_arg, "run_dir": str(tmp)},
                                   kernel_name="python3", engine_name=ENGINE, cwd=str(paths.repo_root()),
                                   progress_bar={"desc": notebook.stem, "leave": True},
                                   execution_timeout=timeout, extra_arguments=KERNEL_ARGUMENTS)
        if not (tmp / METRICS_FILE).is_file():
            raise RuntimeError(f"{notebook.name} finished without writing {METRICS_FILE}")
    except BaseException as exc:
        shutil.rmtree(failed, ignore_errors=True)
        (tmp / "error.txt").write_text("".join(traceback.format_exception_only(type(exc), exc)))
        tmp.rename(failed)
        raise
    shutil.rmtree(failed, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def run(profile: str, notebooks: list[str] | None = None, overrides: dict | None = None, force: bool = False,
        timeout: int | None = None, log=print) -> list[Path]:
    """Validate everything, then execute the notebooks in order; stops at the first failure."""
    overrides = overrides or {}
    selected = resolve_notebooks(list(notebooks or []))
    if not selected:
        raise ConfigError(f"no notebooks found in {paths.notebooks_dir()}")
    profile_values(profile)  # unknown profile -> clear error
    check_overrides(overrides, selected)
    load_profile(profile, **overrides)  # impossible values -> clear error, before any notebook starts
    root = run_root(profile, overrides)
    root.mkdir(parents=True, exist_ok=True)
    profile_arg = profile
    if overrides:
        base = str(Path(profile).resolve()) if Path(profile).suffix in (".yaml", ".yml") else profile
        (root / "profile.yaml").write_text(yaml.safe_dump(
            {"description": f"{profile} with overrides {overrides}", "extends": base, **overrides}, sort_keys=False))
        write_json(root / "overrides.json", overrides)
        profile_arg = str(root / "profile.yaml")
    return [execute(nb, profile_arg, root, force=force, timeout=timeout, log=log) for nb in selected]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2l_utils.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (e.g. 00 01_pretrain_target); default all")
    parser.add_argument("--profile", default="mini", help="profile name or YAML file (default: mini)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun notebooks that already finished")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    parser.add_argument("--list", action="store_true", help="list notebooks, profiles and parameters, then exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            from .config import available_profiles, param_help

            print("profiles:", ", ".join(available_profiles()))
            for nb in available_notebooks():
                print(f"{nb.stem}: {', '.join(sorted(declared_parameters(nb)))}")
            for name in Params.__dataclass_fields__:
                print(f"  {name}: {param_help(name)}")
            return 0
        folders = run(args.profile, args.notebooks, parse_overrides(args.param), args.force, args.timeout)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a notebook failed: papermill already says where
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("done:", *(str(f) for f in folders), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
