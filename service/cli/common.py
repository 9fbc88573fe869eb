"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


class CLIError(Exception):
    """A usage problem found by the CLI itself (exit code 2)."""


def positive_int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("expected positive numbers")
    return vals


def device(name: str):
    """A torch.device, refusing CUDA where there is none."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def settings_from(args: argparse.Namespace, **mapping: str):
    """Settings from the environment, overridden by the flags given on the command line
    (`mapping`: setting name -> argparse attribute)."""
    from ..config import Settings

    over = {k: getattr(args, a) for k, a in mapping.items() if getattr(args, a, None) is not None}
    return Settings(**over)


def progress(total: int | None, desc: str, unit: str = "frames", quiet: bool = False, **kw: Any) -> tqdm:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 10 s in a log."""
    return tqdm(total=total or None, desc=desc, unit=unit, disable=quiet, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 10.0, **kw)


def env_help() -> str:
    from ..config import describe

    return "settings (environment variables):\n" + describe()
