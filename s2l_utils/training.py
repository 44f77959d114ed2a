"""The one training loop (``train``) of pretraining and every fine-tuning method: ε-prediction MSE on captioned
images, with accelerate, checkpoints and resume. All randomness comes from generators seeded by (seed, stream,
step), so a resumed run continues bit for bit as if it had never stopped (on CPU).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from .models import UNCONDITIONAL_PROMPT, DiffusionModel

STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class TrainSpec:
    """The settings of one training run, validated on construction."""

    steps: int
    batch_size: int
    lr: float
    seed: int = 0
    lr_schedule: str = "cosine"  # any name diffusers.optimization.get_scheduler knows
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    checkpoint_every: int = 0  # 0 = no intermediate checkpoints
    mixed_precision: str = "auto"  # auto = fp16 on CUDA, none on CPU
    caption_dropout: float = 0.0  # share of captions replaced by the unconditional prompt (pretraining: SD's 0.1)

    def __post_init__(self):
        if self.steps <= 0:
            raise ValueError(f"training needs steps > 0, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    """An independent CPU generator per (seed, stream, index): reproducible with no state to save."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream * 7_919 + index) % (2**63))


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: consecutive slices of per-epoch permutations (each item once per epoch)."""
    start, stop = step * batch_size, (step + 1) * batch_size
    out = []
    for epoch in range(start // n_items, (stop - 1) // n_items + 1):
        perm = torch.randperm(n_items, generator=_generator(seed, 1, epoch))
        lo, hi = max(start - epoch * n_items, 0), min(stop - epoch * n_items, n_items)
        out.append(perm[lo:hi])
    return torch.cat(out)


def drop_captions(captions: list[str], rate: float, generator: torch.Generator) -> list[str]:
    """Each caption replaced by the unconditional prompt with probability ``rate``, as SD v1 trained (rate 0.1)."""
    dropped = torch.rand(len(captions), generator=generator) < rate
    return [UNCONDITIONAL_PROMPT if drop else caption for caption, drop in zip(captions, dropped.tolist(), strict=True)]


def denoising_loss(model: DiffusionModel, x0: torch.Tensor, text: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Mean ε-MSE with t ~ U{0..T-1} and Gaussian noise drawn from ``generator`` (on CPU, then moved)."""
    t = torch.randint(0, model.num_train_timesteps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    pred = model.predict_noise(model.add_noise(x0, noise, t), t.to(x0.device), text)
    return F.mse_loss(pred.float(), noise.float())


def latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(Path(folder).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    found = [p for p in found if (p / STATE_FILE).is_file()]
    return found[-1] if found else None


def train(model: DiffusionModel, modules: dict[str, torch.nn.Module], images: torch.Tensor, captions: list[str],
          spec: TrainSpec, checkpoint_dir: str | Path | None = None, stop_after: int | None = None,
          progress: bool = True, description: str = "training", after_step: Callable[[], None] | None = None,
          prior: tuple[torch.Tensor, list[str], float] | None = None) -> list[float]:
    """Train the parameters of ``modules`` that require grad; returns the loss of every step so far.

    ``modules`` maps attribute names of ``model`` ("unet", "text_encoder") to the modules that hold trainable
    parameters; they are prepared by accelerate and put back unwrapped afterwards. With ``checkpoint_dir``
    the run saves a checkpoint every ``spec.checkpoint_every`` steps and at the end, and resumes from the
    latest one. ``stop_after`` ends the run early at that step (used to test resume). ``after_step`` runs
    after every optimiser step; ``prior`` = (images, captions, weight) adds DreamBooth's prior-preservation
    term: the same loss on a batch of class images, times ``weight``.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        raise ValueError("no training images")
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: no parameter of the given modules requires grad")
    precision = spec.mixed_precision
    if precision == "auto":
        precision = "fp16" if model.device.type == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision, cpu=model.device.type == "cpu")
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = get_scheduler(spec.lr_schedule, optimizer, num_warmup_steps=spec.warmup_steps,
                              num_training_steps=spec.steps)
    names = list(modules)
    prepared = accelerator.prepare(*modules.values(), optimizer, scheduler)
    wrapped, optimizer, scheduler = prepared[:len(names)], prepared[-2], prepared[-1]
    for name, module in zip(names, wrapped, strict=True):
        setattr(model, name, module)

    losses: list[float] = []
    step = 0
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else None
    resume = latest_checkpoint(ckpt_root) if ckpt_root else None
    if resume is not None:
        accelerator.load_state(str(resume))
        state = json.loads((resume / STATE_FILE).read_text())
        if state["spec"] != asdict(spec):
            raise ValueError(f"checkpoint {resume} was made with other training settings: {state['spec']}")
        step, losses = state["step"], state["losses"]

    end = spec.steps if stop_after is None else min(stop_after, spec.steps)
    # under `accelerate launch`, each of `world` processes takes its share of a global batch of batch_size x world
    world, rank = accelerator.num_processes, accelerator.process_index
    for module in wrapped:
        module.train()
    try:
        bar = tqdm(total=spec.steps, initial=step, desc=description, mininterval=1.0,
                   disable=not progress or not accelerator.is_main_process)
        while step < end:
            idx = batch_indices(len(images), spec.batch_size * world, step, spec.seed)[rank::world]
            generator = _generator(spec.seed, 2, step * world + rank)
            with accelerator.autocast():
                x0 = model.encode(images[idx])
                batch_captions = drop_captions([captions[i] for i in idx], spec.caption_dropout,
                                               _generator(spec.seed, 4, step * world + rank))
                text = model.encode_text(batch_captions)
                loss = denoising_loss(model, x0, text, generator)
                if prior is not None:
                    prior_images, prior_captions, weight = prior
                    pidx = batch_indices(len(prior_images), spec.batch_size * world, step, spec.seed + 1)[rank::world]
                    loss = loss + weight * denoising_loss(
                        model, model.encode(prior_images[pidx]), model.encode_text([prior_captions[i] for i in pidx]),
                        _generator(spec.seed, 3, step * world + rank))
            accelerator.backward(loss)
            if spec.max_grad_norm:
                accelerator.clip_grad_norm_(params, spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; lower the learning rate")
            losses.append(value)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if ckpt_root and (step == end or (spec.checkpoint_every and step % spec.checkpoint_every == 0)):
                _save_checkpoint(accelerator, ckpt_root / f"checkpoint-{step}", step, losses, spec)
        bar.close()
    finally:
        for name, module in zip(names, wrapped, strict=True):
            setattr(model, name, accelerator.unwrap_model(module))
            getattr(model, name).eval()
    return losses


def _save_checkpoint(accelerator: Accelerator, folder: Path, step: int, losses: list[float], spec: TrainSpec) -> None:
    """Write a checkpoint to a temporary folder and rename it, so a crash never leaves a half checkpoint."""
    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "losses": losses, "spec": asdict(spec)}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    accelerator.wait_for_everyone()
