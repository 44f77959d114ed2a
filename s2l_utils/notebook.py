"""What a notebook does at its start and end: resolve parameters, own a run folder, record params and metrics.

Every run folder is self-describing: ``params.json`` (all effective parameters, the git commit, package
versions, device), ``metrics.json`` (what the notebook measured), ``figures/`` and tables, and, when the
runner executed it, the executed notebook itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

from . import paths
from .config import ConfigError, Params, load_profile
from .models import resolve_device

PARAMS_FILE = "params.json"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it
METRICS_FILE = "metrics.json"
_VERSIONED = ("torch", "diffusers", "transformers", "peft", "accelerate", "numpy", "pandas")


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` through a temporary file and a rename, so readers never see half a file; the file gets the
    permissions a plain ``open`` would give it (mkstemp's are private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """``write_bytes`` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode())


def write_json(path: Path, payload) -> None:
    """``write_bytes`` of ``payload`` as indented JSON."""
    write_text(path, json.dumps(payload, indent=1, default=_jsonable))


def write_tables(tables: dict, folder: Path) -> list[Path]:
    """Each table as ``folder/<name>.csv`` (the committed format), each file written atomically."""
    return [write_text(Path(folder) / f"{name}.csv", table.to_csv(index=False)) for name, table in tables.items()]


def relative_links(figures, folder: Path) -> list[str]:
    """``figures`` as links from a page in ``folder``."""
    return [Path(os.path.relpath(f, folder)).as_posix() for f in figures]


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# what publishing writes into the repository: changes there do not make the code "dirty"
GENERATED_OUTPUTS = ("figures", "data/results", "docs/results")


def git_commit() -> str | None:
    """HEAD, with "+dirty" when tracked files other than the notebooks' own outputs differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.repo_root(), capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){p}" for p in GENERATED_OUTPUTS)], cwd=paths.repo_root(),
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    """Versions and hardware, for params.json and the set-up notebook."""
    from importlib.metadata import PackageNotFoundError, version

    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            **{name: v(name) for name in _VERSIONED}}


def profile_name(profile: str) -> str:
    """``mini`` for ``mini`` and for ``runs/mini-ab12/profile.yaml`` (an effective profile the runner wrote)."""
    path = Path(profile)
    return path.parent.name if path.name == "profile.yaml" else path.stem


# parameters that only choose what a report reads and whether it publishes: a run overriding nothing else shows
# its base profile's results, so its figures and published results go under the base profile's name
REPORT_ONLY_PARAMS = ("report_results", "publish")


def results_name(profile: str) -> str:
    """The name a run's figures and published results go under (``figures/<name>/``, ``docs/results/<name>.md``):
    ``profile_name``, except that an effective profile overriding only ``REPORT_ONLY_PARAMS`` (e.g. the report
    of a sweep's collected table) takes its base profile's name."""
    path = Path(profile)
    if path.name == "profile.yaml":
        values = yaml.safe_load(path.read_text()) or {}
        if values.get("extends") and set(values) - {"description", "extends"} <= set(REPORT_ONLY_PARAMS):
            return results_name(values["extends"])
    return profile_name(profile)


@dataclass
class Run:
    """One execution of one notebook under one profile."""

    notebook: str
    profile: str
    params: Params
    dir: Path
    device: torch.device

    @property
    def figures_dir(self) -> Path:
        """Where ``publish_figures`` puts this run's figures: ``figures/<results_name>/``."""
        return paths.figures_dir() / results_name(self.profile)

    @property
    def runs_roots(self) -> list[Path]:
        """Where this run's sibling runs live: its own folder's parent, then ``runs/<profile>/``."""
        roots = [self.dir.resolve().parent]
        profile = self.profile
        while Path(profile).name == "profile.yaml":  # an effective profile the runner wrote: look at its base too
            profile = yaml.safe_load(Path(profile).read_text()).get("extends", "")
            roots.append((paths.runs_dir() / profile_name(profile)).resolve())
        return list(dict.fromkeys(roots))

    def savefig(self, fig, name: str) -> Path:
        """Save ``fig`` as ``<run>/figures/<name>.png`` and return that path; nothing outside the run folder."""
        folder = self.dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / f"{name}.png", dpi=130, bbox_inches="tight")
        return folder / f"{name}.png"

    def publish_figures(self, figures) -> list[Path]:
        """Copy figures (paths, e.g. from ``savefig`` of this run or a sibling run) into ``figures_dir``, each
        atomically; returns the published paths in the same order."""
        return [write_bytes(self.figures_dir / figure.name, figure.read_bytes()) for figure in map(Path, figures)]

    def publish(self, tables: dict, folder: Path, page_path: Path, page, figures, shown, remedy: str) -> dict:
        """Publish: ``figures`` into ``figures_dir``, ``tables`` as CSV into ``folder`` and ``page(links)`` into
        ``page_path``, ``links`` being the published ``shown`` figures relative to the page. Refused before
        anything is written when a table committed in ``folder`` is not among ``tables`` (``remedy`` says what
        to run first). Returns the paths written, by kind (figures, tables, page)."""
        folder = Path(folder)
        dropped = sorted({p.stem for p in folder.glob("*.csv")} - set(tables)) if folder.is_dir() else []
        if dropped:
            raise ConfigError(f"publishing would drop the committed tables {dropped} of {folder}: {remedy}")
        published = self.publish_figures(figures)
        names = {Path(f).name for f in shown}
        links = relative_links([f for f in published if f.name in names], Path(page_path).parent)
        return {"figures": published, "tables": write_tables(tables, folder),
                "page": [write_text(page_path, page(links))]}

    def save_table(self, df, name: str) -> Path:
        """A tidy table as parquet (for code) and CSV (for eyes) in the run folder."""
        df.to_parquet(self.dir / f"{name}.parquet", index=False)
        df.to_csv(self.dir / f"{name}.csv", index=False)
        return self.dir / f"{name}.parquet"

    def log_metrics(self, **metrics) -> dict:
        """Merge ``metrics`` into ``metrics.json`` (the file the runner and reports read)."""
        path = self.dir / METRICS_FILE
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(metrics)
        write_json(path, current)
        return current


def start(notebook: str, profile: str = "mini", run_dir: str = "", **overrides) -> Run:
    """Resolve the profile with the notebook's parameters (``None`` = the profile's value) and open the run.

    Raises before any heavy work on an unknown profile, unknown parameter or impossible value.
    """
    params = load_profile(profile, **overrides)
    folder = Path(run_dir) if run_dir else paths.runs_dir() / profile_name(profile) / notebook
    folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    write_json(folder / PARAMS_FILE, {
        "notebook": notebook, "profile": profile_name(profile),
        "overrides": {k: v for k, v in overrides.items() if v is not None}, "params": params.to_dict(),
        "git_commit": git_commit(), "device": str(device), "environment": environment(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return Run(notebook, profile, params, folder, device)
