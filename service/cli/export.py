"""`agss-vos export`: the network's parts as ONNX, for other runtimes."""

from __future__ import annotations

import argparse
import json

from ..errors import EXIT_OK
from ..vos.options import DEFAULT_MODEL
from .common import CLIError, settings_from

FORMATS = ("onnx",)


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="write the network as ONNX (reference + step graphs, JSON description)",
                       description="Write reference.onnx (the reference encoding), step.onnx (one frame for K "
                                   "objects) and export.json (inputs, outputs, shapes, pre-processing). The object "
                                   "count K and the size H, W (multiples of 32) are dynamic axes.")
    e.add_argument("model", nargs="?", default=None,
                   help=f"model folder, official .pth, or model name (default: {DEFAULT_MODEL})")
    e.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default: onnx)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    e.add_argument("--no-check", dest="check", action="store_false",
                   help="do not run the export in ONNX Runtime against PyTorch afterwards")
    e.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from ..vos.backends import installed
    from ..vos.checkpoint import load_model
    from ..vos.export import DESCRIPTION_FILE, OPSET, export_onnx, verify_onnx
    from ..vos.network import AGSSVOS

    model = load_model(args.model or DEFAULT_MODEL, models_dir=settings_from(args).models_dir)
    if not isinstance(model, AGSSVOS):
        raise CLIError(f"{args.model}: only the AGSS-VOS network has an ONNX export (the flow-only baseline has "
                       "no network)")
    out = export_onnx(model, args.out, opset=args.opset or OPSET)
    desc = json.loads((out / DESCRIPTION_FILE).read_text())
    for part in desc["files"].values():
        size = (out / part["file"]).stat().st_size
        print(f"wrote {out / part['file']} ({size / 1e6:.1f} MB): {', '.join(part['inputs'])} -> "
              f"{', '.join(part['outputs'])}")
    print(f"wrote {out / DESCRIPTION_FILE}")
    if args.check and installed("onnxruntime"):
        diffs = verify_onnx(model, out)
        print("ONNX Runtime vs PyTorch, 3 objects, largest absolute difference: "
              + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return EXIT_OK
