"""Training state saved at checkpoints: trainable weights, optimizer, schedule and counters.

Only trainable parameters are saved: the whole model for a full fine-tune, the adapters for
LoRA (the frozen base is reloaded from its source on resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

STATE_FILE = "train_state.pt"
RESULT_FILE = "result.json"  # only in the final checkpoint, written when the job is done


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def save_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    counters: dict[str, Any],
) -> Path:
    """Write the state into `folder` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "counters": counters,
    }
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / STATE_FILE)
    return folder


def load_state(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore what save_state wrote; returns the counters."""
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise RuntimeError(
            f"checkpoint does not match the model: missing {sorted(trainable & set(missing))[:5]}"
            f", unexpected {sorted(unexpected)[:5]}"
        )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    counters: dict[str, Any] = state["counters"]
    return counters
