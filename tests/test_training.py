import pandas as pd
import pytest
import torch

from s2l_utils import models, pretrain, training
from s2l_utils.config import ConfigError
from s2l_utils.training import TrainSpec


def test_batches_cover_each_item_once_per_epoch():
    seen = torch.cat([training.batch_indices(10, 4, step, seed=1) for step in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:]), "each epoch has its own order"
    assert torch.equal(training.batch_indices(10, 4, 3, seed=1), training.batch_indices(10, 4, 3, seed=1))


def test_resumed_pretraining_equals_an_uninterrupted_run(smoke_params, smoke_data, tmp_path, monkeypatch):
    params = smoke_params  # 12 steps, checkpoint every 6
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "straight"))
    straight, history = pretrain.pretrain_target(params, smoke_data, progress=False)
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path / "resumed"))
    _, partial = pretrain.pretrain_target(params, smoke_data, progress=False, stop_after=6)
    assert len(partial) == 6
    assert not (pretrain.target_dir(params) / pretrain.PIPELINE).exists(), "an interrupted run saves no pipeline"
    resumed, resumed_history = pretrain.pretrain_target(params, smoke_data, progress=False)
    pd.testing.assert_frame_equal(history, resumed_history)
    for module in ("unet", "text_encoder"):
        a, b = getattr(straight, module).state_dict(), getattr(resumed, module).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{module} weights differ after resume"
    untrained = models.build_miniature(params, smoke_data.meta["text"])
    assert not all(torch.equal(a, b) for a, b in zip(untrained.unet.state_dict().values(),
                                                     straight.unet.state_dict().values())), "training moved weights"


def test_a_finished_target_is_loaded_not_retrained(smoke_params, smoke_data, tmp_path, monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    first, _ = pretrain.pretrain_target(smoke_params, smoke_data, progress=False)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("retrained a cached target"))
    monkeypatch.setattr(pretrain, "train", lambda *a, **k: pytest.fail("retrained a cached target"))
    second, _ = pretrain.pretrain_target(smoke_params, smoke_data, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.unet.state_dict().values(), second.unet.state_dict().values()))
    assert pretrain.target_dir(smoke_params.__class__(**{**smoke_params.to_dict(), "seed": 9})) != \
        pretrain.target_dir(smoke_params)


def test_missing_target_and_bad_training_settings_raise_before_training(smoke_params, smoke_data, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("S2L_RUNS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run notebook 01_pretrain_target"):
        pretrain.load_target(smoke_params)
    with pytest.raises(ValueError, match="steps > 0"):
        TrainSpec(steps=0, batch_size=4, lr=1e-3)
    with pytest.raises(ValueError, match="learning rate"):
        TrainSpec(steps=3, batch_size=4, lr=0.0)
    sd_like = smoke_params.__class__(**{**smoke_params.to_dict(), "base_model": "some/model"})
    with pytest.raises(ConfigError, match="nothing to pretrain"):
        pretrain.pretrain_target(sd_like, smoke_data)


def test_training_only_moves_trainable_parameters(smoke_params, smoke_data):
    pipe = models.build_miniature(smoke_params, smoke_data.meta["text"])
    model = models.DiffusionModel(pipe)
    frozen = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.text_encoder.requires_grad_(False)
    rows = smoke_data.pretraining_set()
    losses = training.train(model, {"unet": pipe.unet}, smoke_data.load_images(rows, 16), list(rows["text"]),
                            TrainSpec(steps=3, batch_size=4, lr=1e-3), progress=False)
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert all(torch.equal(frozen[k], v) for k, v in pipe.text_encoder.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    with pytest.raises(ValueError, match="captions"):
        training.train(model, {"unet": pipe.unet}, smoke_data.load_images(rows, 16), ["x"],
                       TrainSpec(steps=1, batch_size=4, lr=1e-3), progress=False)
