"""Offline commands, no server: segment, eval, convert."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import EXIT_OK
from ..vos.options import BACKEND_NAMES, DEFAULT_MODEL, FLOW_NAMES
from .common import device, progress, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("segment", help="segment a video offline (no server)",
                       description="Track the objects of the given masks through a video and write one indexed "
                                   "PNG per frame.")
    s.add_argument("video", help="video file, folder of frames, or zip of frames")
    s.add_argument("--masks", required=True, help="indexed PNG of the first frame, {0,255} PNG, folder/zip of "
                                                  "PNGs named after frames (later ones correct or add objects), "
                                                  "or a JSON prompts file (RLE, polygons, boxes, clicks)")
    s.add_argument("--out", required=True, help="output folder for the PNG masks")
    s.add_argument("--model", help=f"model folder, official .pth, or model name (default: {DEFAULT_MODEL})")
    s.add_argument("--flow", choices=FLOW_NAMES, default="dis", help="optical flow (default: dis)")
    s.add_argument("--no-occlusions", dest="occlusions", action="store_false",
                   help="let pixels that an object uncovered as it moved keep its mask, as a plain backward warp "
                        "does (default: they do not; costs a second optical flow per frame)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    s.add_argument("--backend", choices=("auto", *BACKEND_NAMES),
                   help="where the network runs (default: AGSS_BACKEND, auto: the fastest installed)")
    s.add_argument("--long-side", type=int, help="network input long side, a multiple of 32 (default: the model's)")
    s.add_argument("--overlay", help="also write an overlay video (mp4)")
    s.add_argument("--report", help="also write a JSON line per frame here: each object's area, bbox and score, "
                                    "and the frame's events (lost, reappeared, ...)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=segment)

    e = sub.add_parser("eval", help="DAVIS J&F of predicted masks against ground truth")
    e.add_argument("gt_dir", help="sequence folder, folder of sequences, or DAVIS root")
    e.add_argument("pred_dir", help="predictions: PNGs (one sequence) or one folder per sequence")
    e.add_argument("--json", help="also write the scores as JSON here")
    e.set_defaults(func=evaluate)

    c = sub.add_parser("convert", help="convert an official AGSS-VOS .pth into a model folder")
    c.add_argument("checkpoint")
    c.add_argument("out_dir")
    c.set_defaults(func=convert)


def segment(args: argparse.Namespace) -> int:
    from ..media.inputs import inspect_inputs
    from ..media.masks import write_label_png
    from ..media.overlay import OverlayWriter
    from ..tracking.pipeline import track
    from ..vos.checkpoint import load_model
    from ..vos.tracker import Tracker

    inputs = inspect_inputs(args.video, args.masks)
    settings = settings_from(args, backend="backend")
    model = load_model(args.model or DEFAULT_MODEL, device=device(args.device), models_dir=settings.models_dir,
                       backend=settings.backend)
    tracker = Tracker(model, flow=args.flow, long_side=args.long_side, occlusions=args.occlusions)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overlay = OverlayWriter(args.overlay, inputs.frames.fps, inputs.size, inputs.palette) if args.overlay else None
    report = open(args.report, "w") if args.report else None
    n = 0
    with progress(inputs.frame_count, "segment", quiet=args.quiet) as bar:
        try:
            for res in track(inputs, tracker):
                write_label_png(out / f"{res.frame.name}.png", res.labels, inputs.palette)
                if overlay:
                    overlay.write(res.frame.rgb, res.labels)
                if report:
                    ids = sorted(set(inputs.object_ids) | set(tracker.ids))
                    report.write(json.dumps(res.report(ids), separators=(",", ":")) + "\n")
                n += 1
                bar.set_postfix(objects=tracker.num_objects, refresh=False)
                bar.update()
        finally:
            if overlay:
                overlay.close()
            if report:
                report.close()
    if not args.quiet:
        print(f"wrote {n} masks ({len(inputs.object_ids)} objects, network {tracker.net_size[1]}x"
              f"{tracker.net_size[0]}) to {out}", file=sys.stderr)
    return EXIT_OK


def evaluate(args: argparse.Namespace) -> int:
    from ..tracking.evaluation import evaluate_folder, format_table
    from ..vos.metrics import summarize

    scores = evaluate_folder(args.gt_dir, args.pred_dir)
    print(format_table(scores))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "mean": summarize(scores),
            "objects": [{"sequence": s.sequence, "object": s.object_id, "J": s.j, "F": s.f, "J&F": s.jf}
                        for s in scores]}, indent=2))
    return EXIT_OK


def convert(args: argparse.Namespace) -> int:
    from ..vos.checkpoint import convert_official

    print(f"wrote {convert_official(args.checkpoint, args.out_dir)}")
    return EXIT_OK
