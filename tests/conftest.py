"""Set-up of every test: offline hub, every artefact root under a temporary folder, smoke-sized parameters."""

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True, scope="session")
def isolated_roots(tmp_path_factory):
    """Runs, data caches, figures and published pages of the tests never touch the repository's folders."""
    root = tmp_path_factory.mktemp("s2l")
    for name in ("S2L_RUNS_DIR", "S2L_DATA_DIR", "S2L_FIGURES_DIR", "S2L_DOCS_DIR"):
        os.environ[name] = str(root / name.lower())
    yield root


@pytest.fixture(scope="session")
def smoke_params():
    from s2l_utils.config import load_profile

    return load_profile("smoke")


@pytest.fixture(scope="session")
def smoke_data(smoke_params):
    from s2l_utils import world

    return world.load_data(smoke_params)
