"""Cache keys: a cached step is keyed by the target it used, its data and its code version, so no result is
reused across targets, data or code."""

import dataclasses
from types import SimpleNamespace

import pytest

from s2l_utils import experiment, finetune, models, pretrain, synthesis, world
from s2l_utils.config import PARAM_NAMES, load_profile


def _loaded(params):
    """What ``pretrain.load_target(params)`` returns, as far as keys see it: a pipeline loaded from its folder."""
    return SimpleNamespace(name_or_path=pretrain.target_dir(params) / pretrain.PIPELINE)


def _keys(params, target):
    domain = params.target_domain
    return (experiment.cell_dir(params, target), experiment.target_results_dir(params, target),
            synthesis.sp_key(params, domain, pretrain.target_identity(params, target)))


def test_a_loaded_target_is_named_by_its_cache_folder(smoke_params, smoke_data):
    params = dataclasses.replace(smoke_params, seed=917)  # a target no other test uses
    folder = pretrain.target_dir(params) / pretrain.PIPELINE
    models.build_miniature(params, smoke_data.meta["text"]).save_pretrained(folder)
    pipe = models.load_pipeline(folder, "cpu")
    assert pretrain.target_identity(params, pipe) == pretrain.target_key(params) == folder.parent.name
    assert pretrain.target_source(params, pipe) == str(folder)
    other_seed = dataclasses.replace(params, seed=0)  # a cell's seed does not change the pipeline it was handed
    assert pretrain.target_identity(other_seed, pipe) == pretrain.target_key(params)
    assert pretrain.target_identity(params, None) == pretrain.target_key(params), "no pipe: the profile's target"
    sd = dataclasses.replace(params, base_model="CompVis/stable-diffusion-v1-1")
    assert pretrain.target_identity(sd) == "CompVis/stable-diffusion-v1-1"


def test_profiles_differing_only_in_seed_get_different_keys(smoke_params, smoke_data):
    """Notebook 11 plans cells with the cell's seed and attacks the profile's target: two profiles that differ
    only in ``seed`` give identical cell parameters but different targets, so their keys must differ."""
    profiles = [dataclasses.replace(smoke_params, seed=s, seeds=[0], experiment_domains=1, methods=["lora"])
                for s in (0, 1)]
    (cell_a, _), = experiment.plan(profiles[0], smoke_data)
    (cell_b, _), = experiment.plan(profiles[1], smoke_data)
    assert cell_a == cell_b, "the cells' own parameters cannot tell the targets apart"
    keys_a, keys_b = _keys(cell_a, _loaded(profiles[0])), _keys(cell_b, _loaded(profiles[1]))
    assert all(a != b for a, b in zip(keys_a, keys_b, strict=True)), \
        "cell, target-results and SP keys all name the target"
    assert keys_a == _keys(cell_a, _loaded(profiles[0])), "the same profile finds its own entries again"


def test_the_s2l_maps_targets_get_their_own_keys(smoke_params, smoke_data):
    """Notebook 12's map attacks a target per pretrain_steps (``pretrain_target(cell)``): each gets its own keys,
    the same whether the target was just trained (in memory) or loaded from its cache folder."""
    params = dataclasses.replace(smoke_params, seeds=[0], experiment_domains=1, methods=["lora"])
    cells = [cell for cell, _ in experiment.plan(params, smoke_data, pretrain_steps=[10, 20])]
    in_memory = [_keys(cell, SimpleNamespace(name_or_path=None)) for cell in cells]
    assert in_memory == [_keys(cell, _loaded(cell)) for cell in cells]
    assert len({keys[0] for keys in in_memory}) == len({keys[1] for keys in in_memory}) == 2


def test_code_versions_are_part_of_the_keys(smoke_params, monkeypatch):
    params = dataclasses.replace(smoke_params, target_domain="A")
    target = _loaded(params)
    cell, results, sp = _keys(params, target)
    monkeypatch.setattr(synthesis, "SP_VERSION", synthesis.SP_VERSION + 1)
    assert _keys(params, target)[0] != cell and _keys(params, target)[1] == results and _keys(params, target)[2] != sp
    monkeypatch.undo()
    monkeypatch.setattr(finetune, "FINETUNE_VERSION", finetune.FINETUNE_VERSION + 1)
    assert _keys(params, target)[0] != cell and _keys(params, target)[1:] == (results, sp)
    monkeypatch.undo()
    monkeypatch.setattr(experiment, "CELL_VERSION", experiment.CELL_VERSION + 1)
    assert _keys(params, target)[:2] != (cell, results) and _keys(params, target)[2] == sp
    monkeypatch.undo()
    monkeypatch.setattr(pretrain, "TARGET_VERSION", pretrain.TARGET_VERSION + 1)  # through the target's identity
    assert all(a != b for a, b in zip(_keys(params, _loaded(params)), (cell, results, sp), strict=True))
    monkeypatch.undo()
    monkeypatch.setattr(world, "WORLD_VERSION", world.WORLD_VERSION + 1)  # through the data's identity
    assert all(a != b for a, b in zip(_keys(params, target), (cell, results, sp), strict=True))


def test_the_sp_key_of_a_real_model_names_its_data(smoke_params):
    sd = dataclasses.replace(smoke_params, base_model="CompVis/stable-diffusion-v1-1")
    key = synthesis.sp_key(sd, "A", pretrain.target_identity(sd))
    for change in ({"data_dir": "data/celebrities"}, {"domains_file": "data/domains.txt"},
                   {"base_model": "CompVis/stable-diffusion-v1-4"}):
        other = dataclasses.replace(sd, **change)
        assert synthesis.sp_key(other, "A", pretrain.target_identity(other)) != key, change
    world_seed = dataclasses.replace(sd, world_seed=1)  # the miniature world's captions, with no data_dir
    assert synthesis.sp_key(world_seed, "A", pretrain.target_identity(world_seed)) != key
    assert synthesis.sp_key(sd, "A", pretrain.target_identity(sd)) == key


def test_digest_parts_cannot_shadow_a_parameter():
    params = load_profile("smoke")
    assert params.digest("seed", target="a") != params.digest("seed", target="b") != params.digest("seed")
    with pytest.raises(ValueError, match="collide"):
        params.digest("seed", seed=3)


def test_every_fine_tuning_parameter_is_in_the_recipe():
    """A fine-tuning parameter missing from the recipe would let a run resume another's weights unnoticed."""
    tuning = {n for n in PARAM_NAMES if n.startswith(("ft_", "lora_", "ti_", "hn_", "prior_", "weight_noise_",
                                                         "train_"))}
    assert tuning - {"ft_checkpoint_every"} <= set(finetune.RECIPE_PARAMS) <= set(PARAM_NAMES)


def test_the_keys_of_a_mini_cell_are_pinned():
    """The cache folders of one mini cell, as the cache holds them: a changed key silently recomputes every cached
    cell, so change these values only with a deliberate change of keys (a version bump, a new parameter)."""
    params = load_profile("mini")
    cell = dataclasses.replace(params, method="lora", target_domain="X", seed=1)
    target = _loaded(params)
    identity = pretrain.target_identity(cell, target)
    assert identity == "v2-w2-57350481907e"
    assert synthesis.sp_key(cell, "X", identity) == "7dba58ecd188"
    assert experiment.cell_dir(cell, target).name == "c674ffbdd0a0"
    assert experiment.target_results_dir(cell, target).name == "target-9022d75270cf"
    assert experiment.sibling_record(experiment.REAL_NONMEMBER, cell, target).name == "afcfa58655ce-real_nonmember.json"
