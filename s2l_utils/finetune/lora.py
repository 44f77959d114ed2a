"""LoRA: low-rank adapters (peft) on the attention projections of the UNet and, optionally, the text encoder.

Saved with the pipeline's ``save_lora_weights`` (``pytorch_lora_weights.safetensors`` with the adapter
metadata, so a ``lora_alpha`` different from the rank survives the round trip) and loaded back with the
standard ``pipe.load_lora_weights(folder)``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from diffusers.loaders import lora_base
from diffusers.training_utils import cast_training_params
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from .base import Part

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def add_adapter(module, config: LoraConfig) -> None:
    """``module.add_adapter(config)``, keeping trainable what another part already made trainable.

    peft marks *only* the adapters trainable, which froze the textual-inversion embedding of ``ti_lora`` with
    ``train_text_encoder``; the parameters that required grad before still do afterwards.
    """
    trained = [p for p in module.parameters() if p.requires_grad]
    module.add_adapter(config)
    for parameter in trained:
        parameter.requires_grad_(True)


class LoRA(Part):
    kind = "lora"

    def __init__(self, text_encoder: bool = False):
        self.text_encoder = text_encoder

    def prepare(self, pipe, params, domain):
        if params.lora_rank <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {params.lora_rank}")
        modules = {"unet": pipe.unet}
        add_adapter(pipe.unet, LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha,
                                          init_lora_weights="gaussian", target_modules=UNET_TARGETS))
        if self.text_encoder:
            add_adapter(pipe.text_encoder, LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha,
                                                      init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
            modules["text_encoder"] = pipe.text_encoder
        cast_training_params(list(modules.values()))
        return modules

    def trained_parameters(self, pipe) -> int:
        modules = [pipe.unet] + ([pipe.text_encoder] if self.text_encoder else [])
        return sum(p.numel() for m in modules for n, p in m.named_parameters() if "lora_" in n)

    def save(self, pipe, folder: Path) -> dict:
        layers = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)),
                  "unet_lora_adapter_metadata": pipe.unet.peft_config["default"].to_dict()}
        if self.text_encoder:
            layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(  # TI saves a resized embedding itself
                get_peft_model_state_dict(pipe.text_encoder, save_embedding_layers=False))
            layers["text_encoder_lora_adapter_metadata"] = pipe.text_encoder.peft_config["default"].to_dict()
        type(pipe).save_lora_weights(folder, **layers)
        return {"weight_name": "pytorch_lora_weights.safetensors", "text_encoder": self.text_encoder}

    @classmethod
    def apply(cls, pipe, folder: Path, info: dict) -> None:
        """Load the artefact's adapters; diffusers' notice that the text encoder has none is dropped when the
        artefact was saved without text-encoder LoRA."""
        quiet = contextlib.nullcontext() if info.get("text_encoder", True) else _no_text_encoder_notice(pipe)
        with quiet:
            pipe.load_lora_weights(str(folder), weight_name=info["weight_name"])


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _no_text_encoder_notice(pipe):
    """Within the block, diffusers does not log that it found no LoRA keys for ``pipe``'s text encoder."""
    drop = _DropMessage(f"No LoRA keys associated to {type(pipe.text_encoder).__name__} ")
    lora_base.logger.addFilter(drop)
    try:
        yield
    finally:
        lora_base.logger.removeFilter(drop)
