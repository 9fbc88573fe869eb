"""Load and save AGSS-VOS weights.

Two formats:
- official: `torch.save({'seg': DataParallel state_dict})` (every key starts with `module.`), loaded
  with `torch.load(weights_only=True)`, so a malicious pickle cannot run code;
- ours: a folder with `weights.safetensors` and `model.json` (config and provenance).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .baseline import FlowOnlyModel
from .errors import CheckpointError, ModelNotFoundError
from .network import AGSSVOS, PRESETS, AGSSConfig, SegmentationModel
from .options import DEFAULT_MODEL, FLOW_ONLY

FORMAT = "agss-vos"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model.json"
# Models shipped inside the package (package data, next to this package): the default model.
BUNDLED_MODELS = Path(__file__).resolve().parent.parent / "models"

__all__ = ["BUNDLED_MODELS", "DEFAULT_MODEL", "convert_official", "load_model", "resolve_model", "save_model"]


def model_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where model names are looked up: the given folder (AGSS_MODELS_DIR), then the bundled models."""
    return ([Path(models_dir)] if models_dir else []) + [BUNDLED_MODELS]


def resolve_model(path_or_name: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> Path:
    """A path that exists, or the name of a folder in a model repository."""
    p = Path(path_or_name)
    if p.exists():
        return p
    if p.name == str(path_or_name):
        for d in model_dirs(models_dir):
            if (d / p.name).exists():
                return d / p.name
    where = " or ".join(str(d) for d in model_dirs(models_dir))
    raise ModelNotFoundError(f"model {str(path_or_name)!r} not found (no such file, and no folder of that "
                             f"name in {where})")


def load_model(path_or_name: str | os.PathLike, device: str | torch.device = "cpu",
               models_dir: str | os.PathLike | None = None, backend: str = "torch") -> SegmentationModel:
    """Load an official `.pth` checkpoint or one of our model folders, in eval mode on `device`, with its
    per-frame calls on `backend` ("auto": the fastest installed for the device; service/vos/backends.py).

    The name `flow-only` gives the no-network baseline (masks propagated by optical flow alone).
    """
    if str(path_or_name) == FLOW_ONLY and not Path(FLOW_ONLY).exists():
        return FlowOnlyModel().to(device).eval()
    if backend != "torch":
        from .backends import resolve_backend, wrap

        model = load_model(path_or_name, device, models_dir)
        return wrap(model, resolve_backend(backend, device))
    path = resolve_model(path_or_name, models_dir)
    if path.is_dir():
        cfg, state = _read_folder(path)
    else:
        state = _read_official(path)
        cfg = infer_config(state)
    model = AGSSVOS(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise CheckpointError(f"{path}: weights do not fit the {cfg.backbone} network: {' '.join(first)}") from None
    return model.to(device).eval()


def _read_official(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol chatter about files we refuse anyway
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused by the weights-only loader (not a plain tensor checkpoint; "
                              "it may hold code, which is never run)") from None
    except Exception as e:  # noqa: BLE001 - bytes that are no pickle make the unpickler raise anything
        # (IndexError, KeyError, struct.error, ... on random bytes); weights_only runs no code either way.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable PyTorch checkpoint ({msg[:160]})") from None
    state = obj.get("seg", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected {{'seg': state_dict}} of tensors (an official AGSS-VOS checkpoint)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _read_folder(path: Path) -> tuple[AGSSConfig, dict[str, torch.Tensor]]:
    card_path, weights_path = path / CARD_FILE, path / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{path}: a model folder needs {CARD_FILE} and {WEIGHTS_FILE}")
    try:
        card = json.loads(card_path.read_text())
        cfg = AGSSConfig.from_dict(card["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{card_path}: invalid model card ({e})") from None
    if card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path}: format is {card.get('format')!r}, expected {FORMAT!r}")
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({e})") from None
    return cfg, state


def infer_config(state: dict[str, torch.Tensor]) -> AGSSConfig:
    """Architecture of an official-format state dict, read from its keys and shapes."""
    if "Encoder.conv_stem.weight" in state:
        raise CheckpointError("an EfficientNet AGSS model is stored as a model folder with model.json")
    try:
        width = state["Decoder.pred2.weight"].shape[1]
        bottleneck = "Encoder.res2.0.conv3.weight" in state
        n_res4 = len({k.split(".")[2] for k in state if k.startswith("Encoder.res4.")})
    except KeyError:
        raise CheckpointError("state dict has no AGSS-VOS decoder (Decoder.pred2.weight missing)") from None
    backbone = "resnet50" if bottleneck else ("resnet34" if n_res4 == 6 else "resnet18")
    return AGSSConfig(backbone=backbone, width=int(width), long_side=PRESETS[backbone].long_side)


def save_model(model: AGSSVOS, out_dir: str | os.PathLike, provenance: dict | None = None,
               extra: dict | None = None) -> Path:
    """Write our format: `weights.safetensors` + `model.json` (config, provenance, extra card fields)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    card = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "parameters": sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")),
            "provenance": provenance or {}}
    card.update(extra or {})
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_official(src: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Official `.pth` -> our folder format, recording where the weights came from."""
    model = load_model(src)
    return save_model(model, out_dir, provenance={"converted_from": Path(src).name, "sha256": sha256(src)})
