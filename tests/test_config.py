import pytest

from s2l_utils import config
from s2l_utils.config import ConfigError
from s2l_utils.pretrain import TARGET_PARAMS


def test_profiles_load_and_differ():
    smoke, mini, sd = (config.load_profile(p) for p in ("smoke", "mini", "sd"))
    assert mini == config.Params()  # the dataclass defaults are the mini profile
    assert smoke.pretrain_steps < mini.pretrain_steps and smoke.private_domains < mini.private_domains
    assert sd.image_size == 512 and sd.base_model == "CompVis/stable-diffusion-v1-1"
    assert smoke.digest() != mini.digest()
    full = config.load_profile("full")
    assert full.experiment_domains == 0 and len(full.seeds) >= 3 and len(full.map_pretrain_steps) == 3
    assert full.digest(*TARGET_PARAMS) == mini.digest(*TARGET_PARAMS), "full attacks the same target as mini"


def test_sd_profile_names_the_papers_40_domains():
    from s2l_utils import world

    names = world.read_domains_file(config.load_profile("sd").domains_file)
    assert len(names) == 40 and len(set(names)) == 40 and "Taylor Swift" in names


def test_overrides_apply_and_none_keeps_the_profile_value():
    p = config.load_profile("smoke", pretrain_steps=7, seed=None, pretrain_lr=1)
    assert p.pretrain_steps == 7 and p.seed == 0 and p.pretrain_lr == 1.0


def test_unknown_profile_names_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown profile 'tiny'\. Available: full, mini, sd, smoke"):
        config.load_profile("tiny")


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown parameters: pretrain_stepz\. Valid names: .*pretrain_steps"):
        config.load_profile("mini", pretrain_stepz=3)


def test_float_parameters_accept_yaml_exponent_strings():
    p = config.load_profile("mini", map_lrs=["1e-6", 1], pretrain_lr="1e-3")
    assert p.map_lrs == [1e-6, 1.0] and p.pretrain_lr == 1e-3
    with pytest.raises(ConfigError, match="map_lrs"):
        config.load_profile("mini", map_lrs=["fast"])


def test_unknown_key_in_a_profile_file_is_rejected(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: smoke\nmembers_per_domain: 4\nmember_per_domain: 4\n")
    with pytest.raises(ConfigError, match="member_per_domain"):
        config.load_profile(str(path))
    path.write_text("extends: smoke\nmembers_per_domain: 4\n")
    assert config.load_profile(str(path)).members_per_domain == 4


@pytest.mark.parametrize("override, message", [
    ({"image_size": 0}, "image_size"),
    ({"pretrain_lr": -1.0}, "pretrain_lr"),
    ({"pretrain_batch_size": 2.5}, "pretrain_batch_size"),
    ({"unet_channels": "32,64"}, "unet_channels"),
    ({"image_size": 18, "unet_channels": [16, 32, 64]}, "divisible by 4"),
    ({"device": "tpu"}, "device"),
    ({"private_domains": True}, "private_domains"),
    ({"map_lrs": []}, "must not be empty"),
    ({"ablation_steps": [10, 0]}, "ablation_steps"),
    ({"attacks": ["loss", "lira"]}, "unknown attacks"),
    ({"extraction_false_positives": 0.0}, "extraction_false_positives"),
    ({"extraction_false_positives": 1.0}, "extraction_false_positives"),
    ({"seed": -1}, "'seed'"),
    ({"ablation_seeds": [0, 1024]}, "ablation_seeds"),
])
def test_impossible_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load_profile("mini", **override)


def test_git_commit_is_dirty_for_code_changes_but_not_for_the_notebooks_outputs(tmp_path, monkeypatch):
    import subprocess

    from s2l_utils import notebook, paths

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("README.md", "docs/results/mini.md", "figures/mini/a.png", "data/results/mini/main.csv",
                 "s2l_utils/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("v1")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    head = notebook.git_commit()
    assert len(head) == 40
    for name in ("docs/results/mini.md", "figures/mini/a.png", "data/results/mini/main.csv"):
        (tmp_path / name).write_text("regenerated")
    assert notebook.git_commit() == head, "published outputs do not make the code dirty"
    (tmp_path / "README.md").write_text("edited")
    assert notebook.git_commit() == head + "+dirty", "the README is written by hand, not published"
    (tmp_path / "README.md").write_text("v1")
    (tmp_path / "s2l_utils/x.py").write_text("edited")
    assert notebook.git_commit() == head + "+dirty"
