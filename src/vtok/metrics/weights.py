"""Reading third-party metric weights (LPIPS, VGG, AlexNet, Inception) from files the user gives.

Nothing here downloads: the published metrics need published weights, and vtok never fetches
them at run time. Torch files are read with ``weights_only=True`` (no unpickling of code).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelLoadError

__all__ = ["load_state_dict_file", "load_strict"]


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or torch file; a ``{"state_dict": ...}`` wrapper is unwrapped."""
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: a folder, not a weights file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such weights file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: empty file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ModelLoadError(f"{path}: not a readable .safetensors file ({str(e)[:120]})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's message would advise weights_only=False, which vtok refuses
        raise ModelLoadError(
            f"{path}: not a torch file of plain tensors (vtok reads .pth with weights_only=True and never "
            "unpickles code; a .safetensors copy also works)"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a state dict of tensors")
    return state


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: str | os.PathLike) -> None:
    """`module.load_state_dict(state, strict=True)`, failing with one line that names the mismatch."""
    from ..pretrained import state_dict_mismatch

    problem = state_dict_mismatch(module.state_dict(), state)
    if problem:
        raise ModelLoadError(f"{path}: not {what} weights: tensors {problem}")
    module.load_state_dict(state, strict=True)
