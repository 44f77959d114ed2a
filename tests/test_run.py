"""The runner's small frictions: which overrides any notebook selection takes, the heartbeat of a running cell,
and a quiet package import."""

import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import nbformat
import pytest

from s2l_utils import paths, run
from s2l_utils.config import ConfigError


def test_data_and_target_parameters_are_accepted_whichever_notebooks_run(tmp_path):
    """data/README.md's ``-p data_dir=…`` with only 09 selected: accepted by the runner's check."""
    only_09 = run.resolve_notebooks(["09"])
    for name in ("data_dir", "domains_file", "base_model", "nonmember_shift", "member_duplicates", "world_seed",
                 "pretrain_steps", "unet_channels"):
        assert name not in run.declared_parameters(only_09[0])
        assert name in run.data_and_target_parameters()
    run.check_overrides({"data_dir": str(tmp_path / "missing"), "domains_file": "data/sd_celebrities.txt",
                         "nonmember_shift": 0.5}, only_09)


def test_misspelt_and_unused_overrides_are_still_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown parameters: data_dri"):
        run.run("smoke", ["09"], {"data_dri": str(tmp_path)})
    with pytest.raises(ConfigError, match="'lora_rank' is not declared by the notebooks being run"):
        run.run("smoke", ["09"], {"data_dir": str(tmp_path), "lora_rank": 2})
    assert not list(tmp_path.rglob("*.ipynb")), "nothing ran"


def notebook_with_states(*states) -> nbformat.NotebookNode:
    """A notebook whose cells carry papermill's per-cell state (status, start time)."""
    nb = nbformat.v4.new_notebook()
    for state in states:
        nb.cells.append(nbformat.v4.new_code_cell("pass", metadata={"papermill": state}))
    return nb


def test_running_cell_names_the_cell_and_its_elapsed_time():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    started = (now - timedelta(seconds=150)).isoformat()
    nb = notebook_with_states({"status": "completed"}, {"status": "running", "start_time": started},
                              {"status": "pending"})
    assert run.running_cell(nb, now) == "cell 2/3 running for 2m30s"
    nb.cells[1].metadata.papermill["start_time"] = (now - timedelta(seconds=7)).isoformat()
    assert run.running_cell(nb, now) == "cell 2/3 running for 7s"
    assert run.running_cell(notebook_with_states({"status": "completed"}), now) is None


def test_heartbeat_updates_the_progress_bar_until_stopped():
    class Bar:
        def __init__(self):
            self.postfixes = []

        def set_postfix_str(self, text):
            self.postfixes.append(text)

    class Manager:  # the two attributes of papermill's NotebookExecutionManager the heartbeat reads
        nb = notebook_with_states({"status": "running", "start_time": datetime.now(timezone.utc).isoformat()})
        pbar = Bar()

    stop = threading.Event()
    beat = threading.Thread(target=run.heartbeat, args=(Manager, stop, 0.01))
    beat.start()
    threading.Event().wait(0.2)
    stop.set()
    beat.join(timeout=5)
    assert not beat.is_alive()
    beats = len(Manager.pbar.postfixes)
    assert beats >= 3 and all(p.startswith("cell 1/1 running for ") for p in Manager.pbar.postfixes)
    threading.Event().wait(0.05)
    assert len(Manager.pbar.postfixes) == beats, "no beat after stop"


def test_importing_the_package_prints_no_torchvision_notice():
    """transformers' "requires torchvision (not installed); falling back to …Pil" notice, printed when diffusers'
    pipelines load, is filtered; the package and its model code import without it."""
    out = subprocess.run([sys.executable, "-c", "import s2l_utils.models"], cwd=paths.repo_root(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torchvision" not in out.stderr, out.stderr


def test_the_torchvision_filter_keeps_every_other_transformers_message():
    logger = logging.getLogger("transformers.utils.import_utils")

    def passes(message: str) -> bool:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0, message, (), None)
        return all(f.filter(record) for f in logger.filters)

    assert not passes("`CLIPImageProcessor` requires torchvision (not installed); falling back to "
                      "`CLIPImageProcessorPil` for backward compatibility.")
    assert passes("Could not load PIL fallback CLIPImageProcessorPil: boom")
    assert passes("torchvision is slow today")
