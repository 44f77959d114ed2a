"""Where the repository keeps its data, runs and figures.

Paths come from the package location, never from the working directory, so notebooks behave the same
under JupyterLab, papermill (any cwd) and Colab. Each root can be moved with an environment variable
(tests point them at a temporary folder).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; parallel sweeps may then compute a cache entry twice
    fcntl = None

_PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout this package lives in; outside a checkout (pip install on Colab), ``S2L_ROOT`` or ./s2l."""
    if "S2L_ROOT" in os.environ:
        return Path(os.environ["S2L_ROOT"]).resolve()
    candidate = _PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").exists() and (candidate / "notebooks").is_dir():
        return candidate
    return Path.cwd() / "s2l"


def _root(env: str, default: str) -> Path:
    return Path(os.environ[env]).resolve() if os.environ.get(env) else repo_root() / default


def data_dir() -> Path:
    """Committed small inputs (e.g. the celebrity list) and generated worlds (``data/worlds``, ignored by git)."""
    return _root("S2L_DATA_DIR", "data")


def runs_dir() -> Path:
    """Executed notebooks with their params/metrics, plus caches of expensive artefacts (``runs/cache``)."""
    return _root("S2L_RUNS_DIR", "runs")


def figures_dir() -> Path:
    """Published figures, one sub-folder per profile (a run keeps its own under ``<run>/figures``)."""
    return _root("S2L_FIGURES_DIR", "figures")


def docs_dir() -> Path:
    """The long-form documentation; ``docs/results/<study>.md`` holds each study's published results page."""
    return _root("S2L_DOCS_DIR", "docs")


def results_page(study: str) -> Path:
    """Where a study's published results page lives: ``docs/results/<study>.md``."""
    return docs_dir() / "results" / f"{study}.md"


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def profiles_dir() -> Path:
    return _PACKAGE_DIR / "profiles"


def cache_dir(kind: str) -> Path:
    """Content-addressed caches, e.g. ``cache_dir("targets") / <hash>``."""
    return runs_dir() / "cache" / kind


@contextlib.contextmanager
def cache_lock(entry: Path):
    """Hold an exclusive lock on one cache entry while it is checked and built, so parallel sweep jobs that need
    the same entry (an SP set, the target's results) wait for the first one instead of building it twice."""
    entry = Path(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(f".{entry.name}.lock"), "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
