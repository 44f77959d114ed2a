"""Every fine-tuning method: what it must not touch stays bit-identical, what it trains moves, its artefact
loads back through the standard loaders with identical outputs, and an interrupted run resumes exactly."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import save_file

from s2l_utils import finetune, models, pretrain, sampling, synthesis, world
from s2l_utils.config import FT_LR_TABLES, ConfigError, load_profile
from s2l_utils.finetune import hypernetwork as hn
from s2l_utils.finetune.weight_noise import perturb

FT = dict(ft_steps=3, ft_batch_size=4, sp_size=6, sp_steps=2, ft_checkpoint_every=2)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    params = load_profile("smoke", **FT)
    data = world.load_data(params)
    target, _ = pretrain.pretrain_target(params, data, progress=False)
    domain = synthesis.resolve_domain(params, data)
    sp = synthesis.ensure_sp_set(params, data, target, domain, progress=False)
    return params, data, target, domain, sp, tmp_path_factory.mktemp("ft")


@pytest.fixture(scope="module")
def latent_base(setting):
    """A tiny random *latent* SD pipeline (with a VAE) whose vocabulary covers the world's captions, as a folder."""
    data, root = setting[1], setting[5]
    tokenizer = models.build_tokenizer(models.caption_words(data.meta["text"]))
    models.tiny_random_sd_pipeline(tokenizer).save_pretrained(root / "latent-sd")
    return root / "latent-sd"


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b, keys=None):
    return all(torch.equal(a[k], b[k]) for k in (keys or a))


def _run(setting, method, **overrides):
    _, _, _, domain, sp, root = setting
    params = load_profile("smoke", **{**FT, **overrides})
    out = root / f"{method}-{abs(hash(tuple(sorted(overrides.items()))))}"
    return finetune.finetune(method, params, sp, out, domain, device="cpu", progress=False), params


def _samples(pipe, prompts):
    return sampling.generate(pipe, prompts, "preview", seed=3, steps=2, progress=False)


@pytest.mark.parametrize("method", list(finetune.METHODS))
def test_artefact_loads_back_with_identical_outputs(setting, method):
    result, _ = _run(setting, method, lora_rank=4, lora_alpha=8.0)  # alpha != rank must survive the round trip
    domain = setting[3]
    loaded = finetune.load_finetuned(result.folder, device="cpu")
    assert loaded.method == method
    prompts = loaded.rewrite([world.domain_prompt(domain), "photo of a person"])
    assert torch.allclose(_samples(result.pipe, prompts), _samples(loaded.pipe, prompts), atol=1e-5)
    info = json.loads((result.folder / finetune.ARTEFACT_INFO).read_text())
    assert info["domain"] == domain and info["base"].endswith("pipeline")
    if method != "weight_noise":
        assert len(result.history) == 3 and result.trainable_parameters > 0


def test_dreambooth_trains_the_unet_only(setting):
    target = setting[2]
    result, _ = _run(setting, "dreambooth")
    assert not _same(_state(target.unet), _state(result.pipe.unet))
    assert _same(_state(target.text_encoder), _state(result.pipe.text_encoder))
    with_text, _ = _run(setting, "dreambooth", train_text_encoder=True)
    assert not _same(_state(target.text_encoder), _state(with_text.pipe.text_encoder))


def test_end2end_trains_unet_and_text_encoder(setting):
    target = setting[2]
    result, _ = _run(setting, "end2end")
    assert not _same(_state(target.unet), _state(result.pipe.unet))
    assert not _same(_state(target.text_encoder), _state(result.pipe.text_encoder))


def test_end2end_leaves_the_vae_of_a_latent_model_bit_identical(setting, latent_base):
    params, domain, sp, root = load_profile("smoke", **FT), setting[3], setting[4], setting[5]
    base = models.load_pipeline(latent_base, device="cpu")
    result = finetune.finetune("end2end", params, sp, root / "end2end-latent", domain, device="cpu", progress=False,
                               base=latent_base)
    loaded = finetune.load_finetuned(result.folder, device="cpu").pipe
    for pipe in (result.pipe, loaded):
        assert _same(_state(base.vae), _state(pipe.vae)), "every MIA encodes its queries with this VAE"
        assert not _same(_state(base.unet), _state(pipe.unet))
        assert not _same(_state(base.text_encoder), _state(pipe.text_encoder))
    assert not (result.folder / "vae").exists()
    assert result.trainable_parameters == sum(p.numel() for m in (base.unet, base.text_encoder) for p in m.parameters())


def _ids_seen_by(text_encoder, seen: list):
    """Record every row of token ids ``text_encoder`` is called on; returns the hook handle."""
    def hook(module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        seen.extend(tuple(row) for row in ids.tolist())
    return text_encoder.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("model", ["miniature", "latent_sd"])
def test_multi_vector_placeholder_has_the_same_ids_in_training_scoring_and_generation(setting, latent_base, model,
                                                                                     monkeypatch):
    params, domain, sp, root = load_profile("smoke", **FT, ti_num_vectors=2), setting[3], setting[4], setting[5]
    training: list = []
    original = models.encode_prompts

    def recording(tokenizer, text_encoder, prompts):
        handle = _ids_seen_by(text_encoder, training)
        try:
            return original(tokenizer, text_encoder, prompts)
        finally:
            handle.remove()

    with monkeypatch.context() as patch:
        patch.setattr(models, "encode_prompts", recording)
        result = finetune.finetune("textual_inversion", params, sp, root / f"ti2-{model}", domain, device="cpu",
                                   progress=False, base=latent_base if model == "latent_sd" else None)
    loaded = finetune.load_finetuned(result.folder, device="cpu")
    token = finetune.textual_inversion.placeholder_for(domain)
    placeholder = loaded.pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
    prompt = loaded.rewrite([world.domain_prompt(domain)])
    assert prompt == [world.domain_prompt(domain).replace(domain, token)], "captions carry the token once"
    scoring, generation = [], []
    handle = _ids_seen_by(loaded.pipe.text_encoder, scoring)
    models.DiffusionModel(loaded.pipe).encode_text(prompt)
    handle.remove()
    handle = _ids_seen_by(loaded.pipe.text_encoder, generation)
    _samples(loaded.pipe, prompt)
    handle.remove()
    with_token = [[row for row in seen if placeholder[0] in row] for seen in (training, scoring, generation)]
    assert all(with_token) and {row for rows in with_token for row in rows} == {scoring[0]}, \
        "training, scoring and generation tokenize the prompt identically"
    assert [scoring[0].count(i) for i in placeholder] == [1, 1], "each vector once: expanded exactly once"


def test_textual_inversion_changes_only_the_placeholder_rows(setting):
    target, domain = setting[2], setting[3]
    result, _ = _run(setting, "textual_inversion", ti_num_vectors=2)
    loaded = finetune.load_finetuned(result.folder, device="cpu").pipe
    base_rows = target.text_encoder.get_input_embeddings().weight
    for pipe in (result.pipe, loaded):
        rows = pipe.text_encoder.get_input_embeddings().weight
        assert rows.shape[0] == base_rows.shape[0] + 2
        assert torch.equal(rows[:base_rows.shape[0]], base_rows), "every existing row is bit-identical"
        init = base_rows[pipe.tokenizer.encode("person", add_special_tokens=False)[0]]
        assert not torch.allclose(rows[-1], init) and not torch.allclose(rows[-2], init), "the new rows trained"
    assert _same(_state(target.unet), _state(loaded.unet))
    token = finetune.textual_inversion.placeholder_for(domain)
    assert loaded.tokenizer.convert_tokens_to_ids([token, f"{token}_1"]) == [base_rows.shape[0],
                                                                             base_rows.shape[0] + 1]


def test_ti_lora_with_text_encoder_trains_the_token_and_both_loras(setting):
    target, domain = setting[2], setting[3]
    result, _ = _run(setting, "ti_lora", train_text_encoder=True)
    loaded = finetune.load_finetuned(result.folder, device="cpu")
    base_rows = target.text_encoder.get_input_embeddings().weight
    init = base_rows[target.tokenizer.encode("person", add_special_tokens=False)[0]]
    for pipe in (result.pipe, loaded.pipe):
        rows = pipe.text_encoder.get_input_embeddings().weight
        assert torch.equal(rows[:base_rows.shape[0]], base_rows), "every existing row is bit-identical"
        assert not torch.allclose(rows[base_rows.shape[0]], init), "the placeholder row trained"
        for module in (pipe.unet, pipe.text_encoder):
            lora_b = [v for k, v in _state(module).items() if "lora_B" in k]
            assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have trained"
    prompts = loaded.rewrite([world.domain_prompt(domain)])
    assert torch.allclose(_samples(result.pipe, prompts), _samples(loaded.pipe, prompts), atol=1e-5)


def test_lora_keeps_base_weights_and_moves_adapters(setting):
    target = setting[2]
    result, _ = _run(setting, "lora")
    pipe = finetune.load_finetuned(result.folder, device="cpu").pipe
    base = _state(target.unet)
    state = _state(pipe.unet)
    for key, value in base.items():
        wrapped = key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state.get(key, state.get(wrapped)), value), key
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have trained"
    prompts = ["photo of a person"]
    pipe.disable_lora()
    assert torch.allclose(_samples(pipe, prompts), _samples(target, prompts), atol=1e-6)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("method", ["lora", "ti_lora"])
def test_a_lora_without_text_encoder_weights_loads_without_diffusers_no_keys_warning(setting, method):
    """Loading a UNet-only LoRA artefact logs no "No LoRA keys associated to CLIPTextModel" warning, which the
    plain diffusers load of the same file logs; other records of diffusers still get through."""
    result, _ = _run(setting, method)
    info = json.loads((result.folder / finetune.ARTEFACT_INFO).read_text())
    lora = next(part for part in info["parts"] if part["kind"] == "lora")
    assert lora["text_encoder"] is False
    diffusers_logger, records = logging.getLogger("diffusers"), _Records()
    emitter = logging.getLogger("diffusers.loaders.lora_base")
    filters, level = list(emitter.filters), diffusers_logger.level
    diffusers_logger.setLevel(logging.WARNING)
    diffusers_logger.addHandler(records)
    try:
        plain = models.load_pipeline(info["base"], "cpu")
        plain.load_lora_weights(str(result.folder), weight_name=lora["weight_name"])
        warned = [m for m in records.messages if m.startswith("No LoRA keys associated to CLIPTextModel")]
        assert warned, "the plain load warns (so the capture works)"
        records.messages.clear()
        finetune.load_finetuned(result.folder, device="cpu")
        emitter.warning("still heard")
    finally:
        diffusers_logger.removeHandler(records)
        diffusers_logger.setLevel(level)
    assert not [m for m in records.messages if m.startswith("No LoRA keys")], records.messages
    assert "still heard" in records.messages and emitter.filters == filters, "silenced for that load only"


def test_hypernetwork_stays_out_of_the_unet_state_dict(setting):
    target = setting[2]
    result, _ = _run(setting, "hypernetwork")
    pipe = finetune.load_finetuned(result.folder, device="cpu").pipe
    assert _state(pipe.unet).keys() == _state(target.unet).keys() and _same(_state(target.unet), _state(pipe.unet))
    net = hn.load_hypernetwork(result.folder / hn.WEIGHTS)
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if n.endswith("net.2.weight")), "trained"
    prompts = ["photo of a person"]
    assert not torch.allclose(_samples(pipe, prompts), _samples(target, prompts), atol=1e-6)
    hn.attach(pipe, net, strength=0.0)
    assert torch.equal(_samples(pipe, prompts), _samples(target, prompts)), "strength 0 is exactly the base"


def test_hypernetwork_gives_self_and_cross_attention_their_own_mlps_at_mini_widths(smoke_data, tmp_path):
    mini = load_profile("mini")
    assert mini.text_width == 32 and 32 in mini.unet_channels, "the widths collide"
    pipe = models.build_miniature(mini, smoke_data.meta["text"])
    sites = hn.attention_sites(pipe.unet)
    assert sites == [("cross", 32), ("self", 32)]
    net = hn.Hypernetwork(sites, [1, 2, 1])
    assert set(net.k) == set(net.v) == {"cross_32", "self_32"}
    called = []
    for pair in (net.k, net.v):
        for key, mlp in pair.items():
            mlp.register_forward_hook(lambda module, args, out, key=key: called.append(key))
    roles = [hn.attention_site(m)[0] for m in pipe.unet.modules() if isinstance(m, hn.Attention)]
    hn.attach(pipe, net)
    model = models.DiffusionModel(pipe)
    model.predict_noise(torch.zeros(1, 3, 16, 16), torch.tensor([10]), model.encode_text(["photo of a person"]))
    assert called.count("self_32") == 2 * roles.count("self") > 0, "K and V of every self-attention layer"
    assert called.count("cross_32") == 2 * roles.count("cross") > 0, "K and V of every cross-attention layer"
    part = hn.HypernetworkPart()
    part.hypernetwork = net
    part.save(pipe, tmp_path)
    reloaded = hn.load_hypernetwork(tmp_path / hn.WEIGHTS)
    assert reloaded.sites == sites and _same(net.state_dict(), reloaded.state_dict())
    old = {"widths": "[32]", "structure": "[1, 2, 1]", "activation": "relu"}  # format 1: keyed by width alone
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "old.safetensors", metadata=old)
    with pytest.raises(ValueError, match="format 1 shared one MLP pair"):
        hn.load_hypernetwork(tmp_path / "old.safetensors")


def test_fresh_hypernetwork_is_exactly_the_identity(setting):
    target = setting[2]
    prompts = ["photo of a person"]
    before = _samples(target, prompts)
    hn.attach(target, hn.Hypernetwork(hn.attention_sites(target.unet), [1, 2, 1]))
    try:
        assert torch.equal(_samples(target, prompts), before)
    finally:
        hn.detach(target)


def test_weight_noise_has_the_requested_relative_scale(setting):
    target = setting[2]
    result, params = _run(setting, "weight_noise", weight_noise_scale=0.1)
    assert result.history.empty and result.trainable_parameters == 0
    base, noisy = _state(target.unet), _state(result.pipe.unet)
    big = [k for k, v in base.items() if v.numel() >= 256]
    ratios = torch.stack([(noisy[k] - base[k]).std() / base[k].std() for k in big])
    assert ratios.mean().item() == pytest.approx(0.1, rel=0.1)
    assert _same(_state(target.text_encoder), _state(result.pipe.text_encoder))
    copy = pretrain.load_target(params, "cpu")
    perturb(copy.unet, 0.1, params.seed)
    assert _same(noisy, _state(copy.unet)), "the recipe reproduces the perturbation"


@pytest.mark.parametrize("method", ["lora", "ti_lora"])
def test_resume_equals_an_uninterrupted_run(setting, method, tmp_path):
    params, sp, domain = load_profile("smoke", **FT), setting[4], setting[3]
    straight = finetune.finetune(method, params, sp, tmp_path / "a", domain, device="cpu", progress=False)
    partial = finetune.finetune(method, params, sp, tmp_path / "b", domain, device="cpu", progress=False,
                                stop_after=2)
    assert len(partial.history) == 2 and not (tmp_path / "b" / "artefact").exists()
    resumed = finetune.finetune(method, params, sp, tmp_path / "b", domain, device="cpu", progress=False)
    assert straight.history["loss"].tolist() == resumed.history["loss"].tolist()
    assert _same(_state(straight.pipe.unet), _state(resumed.pipe.unet))
    assert _same(_state(straight.pipe.text_encoder), _state(resumed.pipe.text_encoder))


def test_a_used_folder_refuses_another_recipe_before_loading_anything(setting, tmp_path, monkeypatch):
    """A fine-tune into a folder that holds another run's checkpoints used to resume (or, finished, return) that
    run's weights under the new settings. Any difference in the recipe is refused, naming the field and folder."""
    params, data, target, domain, sp, _ = setting
    folder = tmp_path / "run"
    first = finetune.finetune("lora", params, sp, folder, domain, device="cpu", progress=False)
    noise = synthesis.ensure_sp_set(load_profile("smoke", **FT, sp_level="noise"), data, target, domain,
                                    progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(pretrain, "load_target", lambda *a, **k: pytest.fail("loaded a model before refusing"))
        patch.setattr(finetune, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model before refusing"))
        for method, other, trained_on, field in [
                ("lora", load_profile("smoke", **FT, lora_alpha=16.0), sp, "lora_alpha: 4.0 there, 16.0 now"),
                ("lora", params, noise, "training_set"), ("dreambooth", params, sp, "method: 'lora' there"),
                ("lora", load_profile("smoke", **FT, seed=1), sp, "seed: 0 there, 1 now")]:
            with pytest.raises(ConfigError, match="another recipe") as refused:
                finetune.finetune(method, other, trained_on, folder, domain, device="cpu", progress=False)
            assert field in str(refused.value) and str(folder) in str(refused.value)
        patch.setattr(finetune, "FINETUNE_VERSION", finetune.FINETUNE_VERSION + 1)
        with pytest.raises(ConfigError, match="finetune_version"):
            finetune.finetune("lora", params, sp, folder, domain, device="cpu", progress=False)
    (tmp_path / "legacy" / "checkpoints").mkdir(parents=True)  # a folder written before recipes were recorded
    with pytest.raises(ConfigError, match="no recorded recipe"):
        finetune.finetune("lora", params, sp, tmp_path / "legacy", domain, device="cpu", progress=False)
    again = finetune.finetune("lora", params, sp, folder, domain, device="cpu", progress=False)
    assert again.history["loss"].tolist() == first.history["loss"].tolist(), "the same recipe returns its run"
    assert _same(_state(first.pipe.unet), _state(again.pipe.unet))


def test_each_method_has_its_own_default_learning_rate_on_sd():
    sd = load_profile("sd")
    assert sd.ft_lr == 0 and sd.ft_lr_defaults == "sd"
    assert finetune.learning_rate(sd, "dreambooth_lora") == 1e-6, "the released S2L code's lora_db.sh"
    assert finetune.learning_rate(sd, "textual_inversion") == 2e-3, "not the released code's 1e-6"
    assert finetune.learning_rate(sd, "hypernetwork") == 1e-5, "A1111's default"
    assert finetune.learning_rate(load_profile("sd", ft_lr=3e-5), "textual_inversion") == 3e-5, "ft_lr overrides"
    mini = load_profile("mini")
    assert [finetune.learning_rate(mini, m) for m in ("dreambooth", "textual_inversion", "lora", "ti_lora")] == \
        [1e-4, 5e-3, 1e-3, 1e-3]
    trained = {name for name, method in finetune.METHODS.items() if any(p.trains for p in method.build(mini))}
    assert set(finetune.DEFAULT_LR) == set(FT_LR_TABLES)
    assert all(set(table) == trained for table in finetune.DEFAULT_LR.values())
    with pytest.raises(ConfigError, match="ft_lr_defaults"):
        load_profile("smoke", ft_lr_defaults="sdxl")


def test_prior_preservation_with_zero_weight_equals_plain_training(setting):
    params, data, target, domain, sp, root = setting
    prior_params = load_profile("smoke", **{**FT, "sp_level": "class", "sp_size": 4})
    prior = synthesis.ensure_sp_set(prior_params, data, target, domain, progress=False)
    assert set(prior.meta["text"]) == {params.class_prompt}
    plain, _ = _run(setting, "lora")
    zero = finetune.finetune("lora", load_profile("smoke", **FT, prior_preservation=True, prior_loss_weight=0.0),
                             sp, root / "prior0", domain, prior_set=prior, device="cpu", progress=False)
    full = finetune.finetune("lora", load_profile("smoke", **FT, prior_preservation=True),
                             sp, root / "prior1", domain, prior_set=prior, device="cpu", progress=False)
    assert _same(_state(plain.pipe.unet), _state(zero.pipe.unet))
    assert not _same(_state(plain.pipe.unet), _state(full.pipe.unet))
    assert (full.history["loss"] > plain.history["loss"]).all(), "the prior term adds a positive loss"


def test_sp_synthesis_is_deterministic_and_levels_differ(setting):
    params, data, target, domain, _, _ = setting
    images_a, meta_a = synthesis.synthesize(target, data, domain, params, progress=False)
    images_b, _ = synthesis.synthesize(target, data, domain, params, progress=False)
    assert torch.equal(images_a, images_b) and images_a.shape == (6, 3, 16, 16)
    assert set(meta_a["text"]) == {world.domain_prompt(domain)}
    other_seed = load_profile("smoke", **FT, seed=1)
    assert not torch.equal(images_a, synthesis.synthesize(target, data, domain, other_seed, progress=False)[0])
    captions = synthesis.sp_prompts(data, domain, "captions", 8, "photo of a person")
    assert captions[:6] == list(data.split(domain, "member")["text"]) and captions[6:] == captions[:2]
    noise, noise_meta = synthesis.synthesize(target, data, domain, load_profile("smoke", **FT, sp_level="noise"),
                                             progress=False)
    assert noise.min() >= -1 and noise.max() <= 1 and abs(noise.mean().item()) < 0.1
    assert set(noise_meta["text"]) == {world.domain_prompt(domain)}


def test_bad_input_is_rejected_before_training(setting, tmp_path, monkeypatch):
    params, data, _, domain, sp, _ = setting
    monkeypatch.setattr(pretrain, "load_target", lambda *a, **k: pytest.fail("loaded a model before rejecting"))
    with pytest.raises(ConfigError, match=re.escape("unknown fine-tuning method 'loral'. Methods: dreambooth")):
        finetune.finetune("loral", params, sp, tmp_path, domain)
    with pytest.raises(ValueError, match="prior_preservation is on"):
        finetune.finetune("lora", load_profile("smoke", prior_preservation=True), sp, tmp_path, domain)
    with pytest.raises(ConfigError, match="ft_steps"):
        load_profile("smoke", ft_steps=0)
    with pytest.raises(ConfigError, match="lora_rank"):
        load_profile("smoke", lora_rank=0)
    with pytest.raises(ConfigError, match="sp_level"):
        load_profile("smoke", sp_level="everything")
    with pytest.raises(ConfigError, match="unknown target_domain 'Nobody'"):
        synthesis.resolve_domain(load_profile("smoke", target_domain="Nobody"), data)
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        world.ImageFolderData(tmp_path / "missing-sp")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metadata.jsonl").write_text("")
    with pytest.raises(ValueError):
        finetune.finetune("lora", params, world.ImageFolderData(tmp_path / "empty"), tmp_path, domain)
    with pytest.raises(FileNotFoundError, match="not a fine-tuning artefact"):
        finetune.load_finetuned(tmp_path)
