"""Making and measuring models: train, validate."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import EXIT_OK
from ..vos.options import FLOW_NAMES, PRESET_NAMES
from .common import CLIError, device, progress


def register(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train AGSS-VOS (resumable; validation J&F logged)")
    tr.add_argument("--config", required=True, help=f"a JSON training config or a preset: {', '.join(PRESET_NAMES)}")
    tr.add_argument("--data", action="append", required=True, help="training sequences (repeatable)")
    tr.add_argument("--out", required=True, help="run folder: last.pt, log.jsonl, best/, final/")
    tr.add_argument("--val", help="validation sequences (J&F every val_every iterations)")
    tr.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    tr.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                    help="mixed precision (default auto: bfloat16 on a GPU that has it, float16 on an older one, "
                         "off on the CPU)")
    tr.add_argument("--workers", type=int, default=0,
                    help="processes that make the clips and their flows ahead of the network, on other cores "
                         "(the same clips as with 0, the default: in the training process)")
    tr.add_argument("--iterations", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--val-every", type=int)
    tr.add_argument("--checkpoint-every", type=int)
    tr.add_argument("--restart", action="store_true", help="ignore the run folder's last checkpoint")
    tr.add_argument("--export", help="after training: write the best model here with a measured model card")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=train)

    va = sub.add_parser("validate", help="J&F of several models on annotated sequences, in one run")
    va.add_argument("--models", default="agss-lite,flow-only", help="comma-separated model names or paths")
    va.add_argument("--data", required=True, help="annotated sequences (DAVIS layouts)")
    va.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    va.add_argument("--long-side", type=int, help="network long side for every model (default: the first model's)")
    va.add_argument("--composites", type=int, default=0, help="also N multi-object composites of the data")
    va.add_argument("--prompts", action="store_true",
                    help="instead: what prompts are worth with the first model (a run from the true masks vs one "
                         "from GrabCut of the true boxes, and a correction where the run drifted most)")
    va.add_argument("--device", default="cpu")
    va.set_defaults(func=validate)


def train(args: argparse.Namespace) -> int:
    from ..training.loop import TrainConfig, training_seconds
    from ..training.loop import train as run

    if args.config in PRESET_NAMES:
        from ..vos.network import PRESETS

        cfg = TrainConfig(model=PRESETS[args.config].to_dict())
    else:
        if not Path(args.config).is_file():
            raise CLIError(f"--config {args.config}: not a preset ({', '.join(PRESET_NAMES)}) nor a JSON file")
        cfg = TrainConfig.from_file(args.config)
    for name in ("iterations", "seed", "val_every", "checkpoint_every"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    for d in args.data:
        if not Path(d).is_dir():
            raise CLIError(f"--data {d}: no such folder")
    if args.workers < 0:
        raise CLIError(f"--workers {args.workers}: must be 0 or more")
    device(args.device)
    started = time.monotonic()
    with progress(cfg.iterations, "train", unit="clips", quiet=args.quiet) as bar:
        def on_step(it: int, loss: float, iou: float) -> None:
            if bar.n == 0 and it > 1:
                bar.reset(total=cfg.iterations)  # resumed: count from the checkpoint
                bar.update(it - 1)
            bar.set_postfix(loss=f"{loss:.4f}", iou=f"{iou:.3f}", refresh=False)
            bar.update()

        best = run(cfg, args.data, args.out, args.val, args.device, resume=not args.restart, progress=on_step,
                   log=lambda m: bar.write(m, file=sys.stderr), amp=args.amp, workers=args.workers)
    print(f"best model: {best} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.export:
        from ..training.report import export_model

        out = export_model(best, Path(args.export), cfg, [str(d) for d in args.data], str(args.val),
                           training_seconds(args.out), args.device, log=lambda m: print(m, file=sys.stderr))
        print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    from ..training.datasets import load_sequences
    from ..training.report import compare, composites, format_table
    from ..vos.checkpoint import load_model

    seqs = load_sequences(args.data)
    models = {name: load_model(name, device=args.device) for name in args.models.split(",")}
    if args.prompts:
        return _prompts(args, seqs, next(iter(models.items())))
    # Every model at the same network size, so that the flow they share sees the same frames.
    long_side = args.long_side or next(iter(models.values())).config.long_side
    print(f"J&F, DAVIS protocol, flow {args.flow}, network long side {long_side}, on {args.data} "
          f"({len(seqs)} sequences)")
    print(format_table(compare(models, seqs, args.flow, long_side)))
    if args.composites:
        print(f"\nmulti-object composites made from the same sequences ({args.composites})")
        print(format_table(compare(models, composites(seqs, args.composites), args.flow, long_side)))
    return EXIT_OK


def _prompts(args: argparse.Namespace, seqs: list, named_model: tuple) -> int:
    from ..tracking.prompt_study import format_table, study

    name, model = named_model
    long_side = args.long_side or model.config.long_side
    print(f"prompts with {name}, flow {args.flow}, network long side {long_side}, on {args.data}")
    results = []
    for seq in seqs:
        if not seq.annotated.all():
            raise CLIError(f"{seq.name}: --prompts needs the ground truth on every frame")
        results.append(study(model, seq.name, seq.frames, seq.labels, args.flow, long_side))
        print(f"  {seq.name} done", file=sys.stderr)
    print(format_table(results))
    return EXIT_OK
