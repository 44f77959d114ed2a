"""Build, save and load text-to-image pipelines, miniature or real Stable Diffusion, behind one interface.

The miniature target (``build_miniature``) is a *pixel-space* SD-format pipeline (``PixelDiffusionPipeline``: a
locally built CLIP-BPE tokenizer, ``CLIPTextModel``, ``UNet2DConditionModel`` on RGB pixels, DDIM), saved as an
ordinary diffusers folder; real SD checkpoints (latent, with ``AutoencoderKL``) load through the same
``load_pipeline``. ``DiffusionModel`` is the one interface for both: encode, add_noise, predict_noise, decode.
"""

from __future__ import annotations

import inspect
import json
import re
import tempfile
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .config import Params

GENERIC_WORDS = ("a", "an", "the", "photo", "of", "face", "person", "picture", "portrait", "image", "background")
TOKENIZER_MAX_LENGTH = 32
# the unconditional prompt of classifier-free guidance: encoded when no negative prompt is given (as
# StableDiffusionPipeline does) and what caption dropout trains on
UNCONDITIONAL_PROMPT = ""


# ------------------------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-character table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def caption_words(captions) -> list[str]:
    """Lower-case words of the captions, in first-seen order (CLIP's pre-tokenizer lower-cases and splits)."""
    words: dict[str, None] = {}
    for caption in captions:
        for word in re.findall(r"[a-z]+", caption.lower()):
            words[word] = None
    return list(words)


def build_tokenizer(words, max_length: int = TOKENIZER_MAX_LENGTH) -> CLIPTokenizer:
    """A real CLIP byte-level BPE tokenizer whose merges spell each given word as one token.

    Any other text still tokenizes (byte pieces), and ``add_tokens`` works as on SD's tokenizer.
    """
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    known, merges = set(vocab), []
    for word in dict.fromkeys([*GENERIC_WORDS, *words]):
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merge = f"{pieces[0]} {pieces[1]}"
            if merged not in known:
                known.add(merged)
                vocab.append(merged)
                merges.append(merge)
            pieces = [merged, *pieces[2:]]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        Path(tmp, "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=max_length)


# -------------------------------------------------------------------------------------- pixel pipeline


def expand_placeholders(tokenizer, prompts: list[str]) -> list[str]:
    """Multi-vector textual-inversion tokens spelled out, ``<tok>`` -> ``<tok> <tok>_1 …``, by diffusers' own
    ``maybe_convert_prompt`` (as ``StableDiffusionPipeline`` does before tokenizing). The only expansion anywhere:
    captions carry just ``<tok>``, so training, scoring and generation see the same token ids."""
    return TextualInversionLoaderMixin().maybe_convert_prompt(list(prompts), tokenizer)


def encode_prompts(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """CLIP last hidden states for ``prompts`` (placeholders expanded and padded to the tokenizer's max
    length, as SD does)."""
    ids = tokenizer(expand_placeholders(tokenizer, prompts), padding="max_length",
                    max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


class PixelDiffusionPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin):
    """Stable Diffusion without the autoencoder: the UNet denoises RGB pixels directly.

    Saved and loaded like any diffusers pipeline (``save_pretrained`` / ``from_pretrained``), and it carries
    the LoRA and textual-inversion loader mixins, so ``load_lora_weights`` and ``load_textual_inversion``
    work as on ``StableDiffusionPipeline``.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _optional_components: ClassVar[list[str]] = []

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 50, guidance_scale: float = 3.0,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True, **_ignored):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        size = self.unet.config.sample_size
        text = encode_prompts(self.tokenizer, self.text_encoder, prompts)
        use_cfg = guidance_scale > 1.0
        if use_cfg:
            negatives = negative_prompt or UNCONDITIONAL_PROMPT
            negatives = [negatives] * len(prompts) if isinstance(negatives, str) else list(negatives)
            text = torch.cat([encode_prompts(self.tokenizer, self.text_encoder, negatives), text])
        x = randn_tensor((len(prompts), self.unet.config.in_channels, size, size), generator=generator,
                         device=self.unet.device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self.unet.device)
        accepted = inspect.signature(self.scheduler.step).parameters  # DDIM takes eta, DDPM a generator...
        step_kwargs = {k: v for k, v in {"eta": eta, "generator": generator}.items() if k in accepted}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = torch.cat([x, x]) if use_cfg else x
            eps = self.unet(model_in, t, encoder_hidden_states=text.to(self.unet.dtype)).sample
            if use_cfg:
                eps_uncond, eps_text = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_text - eps_uncond)
            x = self.scheduler.step(eps, t, x, **step_kwargs).prev_sample
        images = (x.clamp(-1, 1) + 1) / 2  # [0, 1], as diffusers pipelines return
        if output_type == "pt":
            out = images
        elif output_type == "np":
            out = images.permute(0, 2, 3, 1).float().cpu().numpy()
        elif output_type == "pil":
            out = self.numpy_to_pil(images.permute(0, 2, 3, 1).float().cpu().numpy())
        else:
            raise ValueError(f"output_type must be pil, np or pt, got {output_type!r}")
        return ImagePipelineOutput(images=out) if return_dict else (out,)


def _unet_blocks(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Plain convolution at full resolution, cross-attention below it (SD's layout, shortened)."""
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    return down, up


def build_miniature(params: Params, captions) -> PixelDiffusionPipeline:
    """A fresh (random) miniature target whose vocabulary covers the world's captions; seeded by ``params.seed``."""
    tokenizer = build_tokenizer(caption_words(captions))
    torch.manual_seed(params.seed)
    width = params.text_width
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=tokenizer.model_max_length, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    down, up = _unet_blocks(len(params.unet_channels))
    unet = UNet2DConditionModel(
        sample_size=params.image_size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=tuple(params.unet_channels), down_block_types=down, up_block_types=up,
        cross_attention_dim=width, attention_head_dim=8, norm_num_groups=8)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=True, set_alpha_to_one=True, steps_offset=1)
    pipe = PixelDiffusionPipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)  # sampling.generate shows one bar over batches instead
    return pipe


def tiny_random_sd_pipeline(tokenizer: CLIPTokenizer, seed: int = 0, image_size: int = 32) -> StableDiffusionPipeline:
    """A few-kB random *latent* SD pipeline (UNet + AutoencoderKL + CLIP), so CPU tests walk the real-SD path."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=image_size)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=tokenizer.model_max_length, projection_dim=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


# -------------------------------------------------------------------------------------------- loading


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_pipeline(source: str | Path, device: str = "auto", dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """Load a pipeline from a local diffusers folder or a hub id (``CompVis/stable-diffusion-v1-1``).

    Uses fp16 on CUDA and fp32 on CPU unless ``dtype`` is given. Local folders never touch the network.
    """
    target = resolve_device(device)
    dtype = dtype or (torch.float16 if target.type == "cuda" else torch.float32)
    folder = Path(source).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
        class_name = json.loads(index.read_text()).get("_class_name")
        cls = PixelDiffusionPipeline if class_name == PixelDiffusionPipeline.__name__ else DiffusionPipeline
        extra = {} if cls is PixelDiffusionPipeline else {"safety_checker": None, "requires_safety_checker": False}
        pipe = cls.from_pretrained(folder, dtype=dtype, local_files_only=True, **extra)
    elif _HUB_ID.match(str(source)) and not str(source).startswith("."):
        try:
            pipe = DiffusionPipeline.from_pretrained(str(source), dtype=dtype, safety_checker=None,
                                                     requires_safety_checker=False)
        except Exception as exc:
            raise FileNotFoundError(
                f"model {source!r} is neither a local folder nor loadable from the hub cache "
                f"(offline, or not downloaded yet): {type(exc).__name__}: {exc}") from exc
    else:
        raise FileNotFoundError(f"model path not found: {source}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(target)


# ---------------------------------------------------------------------------------- the shared interface


class DiffusionModel:
    """One view of a latent (SD) or pixel pipeline for training and attacks.

    ``encode`` maps images in [-1, 1] to the diffusion space (VAE latent *mean* x scaling factor, so scores
    are repeatable; pixels unchanged), ``add_noise`` is the DDPM forward process, ``predict_noise`` the
    conditional ε-prediction, and ``decode`` goes back to images.
    """

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        self.unet = pipe.unet
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.vae = getattr(pipe, "vae", None)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        if self.noise_scheduler.config.prediction_type != "epsilon":
            raise NotImplementedError("only epsilon-prediction models are supported "
                                      f"(got {self.noise_scheduler.config.prediction_type!r})")

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def image_size(self) -> int:
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.is_latent else 1
        return self.unet.config.sample_size * scale

    @property
    def num_train_timesteps(self) -> int:
        return self.noise_scheduler.config.num_train_timesteps

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.noise_scheduler.alphas_cumprod

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images are {tuple(images.shape[-2:])} px but the model works at "
                             f"{self.image_size} px")
        images = images.to(self.device, self.dtype)
        if not self.is_latent:
            return images
        return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        if not self.is_latent:
            return x0.clamp(-1, 1)
        return self.vae.decode(x0 / self.vae.config.scaling_factor).sample.clamp(-1, 1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.noise_scheduler.add_noise(x0, noise, timesteps.to(x0.device))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        return encode_prompts(self.tokenizer, self.text_encoder, list(captions)).to(self.dtype)

    def predict_noise(self, xt: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.unet(xt, timesteps.to(xt.device), encoder_hidden_states=text).sample
