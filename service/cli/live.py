"""`agss-vos live`: stream a video file, a folder or zip of frames, a webcam or a camera URL to a live
session, and write each answered frame as it arrives."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .common import CLIError, progress

JPEG_QUALITY = 95


def register(sub: argparse._SubParsersAction) -> None:
    lv = sub.add_parser("live", help="stream a video, folder, webcam or camera URL to a live session",
                        description="Send frames at the source's rate (or --fps) to a live session and write each "
                                    "answered frame as an indexed PNG (named like `segment` does) and/or an overlay "
                                    "video. Frames are sent as JPEG (quality 95).")
    lv.add_argument("source", help="video file, folder or zip of frames, a webcam number (0), or an rtsp:// or "
                                   "http:// URL that OpenCV opens")
    lv.add_argument("--masks", required=True, help="the prompts: an indexed PNG of the first frame, a folder or zip "
                                                   "of PNGs named after frames, or a JSON prompts file")
    where = lv.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="HTTP API base URL (the session runs over its WebSocket)")
    where.add_argument("--grpc", metavar="HOST:PORT", help="the gRPC API (the session runs over Track)")
    lv.add_argument("--fps", type=float, help="frames per second to send (default: the source's rate)")
    lv.add_argument("--policy", choices=("latest", "all"), default="latest",
                    help="latest: the worker drops waiting frames (real time); all: every frame is computed")
    lv.add_argument("--options", help='more session options as JSON, e.g. {"model": "agss-lite", "long_side": 512}')
    lv.add_argument("--max-frames", type=int, help="stop after this many frames (a camera never ends)")
    lv.add_argument("--out", help="folder for the indexed PNGs")
    lv.add_argument("--overlay", help="an overlay video of the answered frames (mp4)")
    lv.add_argument("--key", help="API key (or AGSS_API_KEY)")
    lv.add_argument("--quiet", action="store_true")
    lv.set_defaults(func=live)


class _Source:
    """Frames from a file source (checked with its prompts) or a camera, with their names and rate."""

    def __init__(self, source: str, masks: str):
        from ..media.inputs import inspect_inputs, read_prompts

        self.camera = source.isdigit() or "://" in source
        if self.camera:
            import cv2

            self.cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
            if not self.cap.isOpened():
                raise CLIError(f"{source}: cannot open this camera or stream")
            self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or 30.0
            self.prompts = read_prompts(masks)
            self.schedule = self.prompts.assign(None, None)
            self.total = None
        else:
            inputs = inspect_inputs(source, masks)
            self.inputs, self.prompts, self.schedule = inputs, inputs.prompts, inputs.schedule
            self.fps, self.total = inputs.frames.fps, inputs.frame_count
        self.palette = self.prompts.palette()

    def frames(self):
        """(name, rgb (H,W,3) uint8)"""
        if not self.camera:
            for f in self.inputs.frames:
                yield f.name, f.rgb
            return
        import cv2

        i = 0
        while True:
            ok, bgr = self.cap.read()
            if not ok:
                return
            yield f"{i:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1

    def prompt_document(self) -> dict:
        """Every prompt of the masks file, as one JSON document keyed by frame index."""
        frames = {}
        for f, key in sorted(self.schedule.items()):
            frames[str(f)] = {str(i): p.to_json() for i, p in self.prompts.frame_prompts(key).items()}
        return {"frames": frames}


def live(args: argparse.Namespace) -> int:
    import os

    import cv2

    from ..client import ClientError
    from ..client.session import GrpcSession, WsSession
    from ..media.masks import write_label_png
    from ..media.overlay import OverlayWriter
    from ..media.rle import objects_to_labels

    try:
        options = {**(json.loads(args.options) if args.options else {}), "policy": args.policy}
    except json.JSONDecodeError as e:
        raise CLIError(f"--options is not valid JSON ({e.msg})") from None
    src = _Source(args.source, args.masks)
    fps = args.fps or src.fps
    if fps <= 0:
        raise CLIError("--fps must be positive")
    key = args.key or os.environ.get("AGSS_API_KEY")
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    where = args.grpc or args.server
    sent: dict[int, tuple[str, np.ndarray, float]] = {}  # index -> (name, rgb, sent at), until answered
    order: list[tuple[str, np.ndarray, float]] = []  # sent, waiting for their ack (index)
    lock = threading.Lock()
    stats = {"frames": 0, "dropped": 0, "errors": 0, "delays": []}
    overlay = None
    try:
        session = (GrpcSession(args.grpc, options, key=key) if args.grpc else
                   WsSession.create(args.server, options, key=key))
    except ClientError as e:
        print(f"agss-vos: error: {where}: {e}", file=sys.stderr)
        return EXIT_USAGE if e.caller_fault else EXIT_FAILURE
    total = min(src.total or args.max_frames or 0, args.max_frames or 10**12) or None
    bar = progress(total, "live", quiet=args.quiet)

    def send() -> None:
        session.send_prompts(src.prompt_document())
        start = time.monotonic()
        for n, (name, rgb) in enumerate(src.frames()):
            if args.max_frames and n >= args.max_frames:
                break
            if not src.camera:  # a camera paces itself; files are sent at their rate
                time.sleep(max(0.0, start + n / fps - time.monotonic()))
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            _, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            with lock:
                order.append((name, rgb, time.time()))
            session.send_frame(jpeg.tobytes())
        session.end()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    status, ended = EXIT_OK, False
    try:
        for msg in session.messages():
            kind, index = msg["type"], msg.get("index")
            if kind == "ack":
                with lock:
                    sent[index] = order.pop(0)
                continue
            if kind == "end":
                ended = True
                break
            if kind == "prompts":  # the prompts were taken
                continue
            if index is None:  # a refused frame or prompt: say so, go on
                print(f"agss-vos: {msg['code']}: {msg['message']}", file=sys.stderr)
                stats["errors"] += 1
                if msg["code"] == "backlog_full":
                    with lock:
                        order.pop(0)
                continue
            with lock:
                name, rgb, t_sent = sent.pop(index, ("", None, 0.0))
            if kind == "frame":
                stats["frames"] += 1
                stats["delays"].append(time.time() - t_sent)
                labels = objects_to_labels(msg["objects"], rgb.shape[:2])
                if out:
                    write_label_png(out / f"{name}.png", labels, src.palette)
                if args.overlay:
                    overlay = overlay or OverlayWriter(args.overlay, fps, rgb.shape[:2], src.palette)
                    overlay.write(rgb, labels)
            elif kind == "dropped":
                stats["dropped"] += 1
            elif kind == "error":
                stats["errors"] += 1
                print(f"agss-vos: frame {index}: {msg['code']}: {msg['message']}", file=sys.stderr)
            bar.update()
    except ClientError as e:
        print(f"agss-vos: error: {where}: {e}", file=sys.stderr)
        status = EXIT_FAILURE
    finally:
        if not ended:  # interrupted: the session ends now rather than at its idle timeout
            with contextlib.suppress(Exception):
                session.end()
        bar.close()
        session.close()
        if overlay:
            overlay.close()
    d = np.array(stats["delays"]) * 1000 if stats["delays"] else np.zeros(1)
    print(f"session {session.id}: {stats['frames']} frames answered, {stats['dropped']} dropped, {stats['errors']} "
          f"errors; delay sent -> masks median {np.median(d):.0f} ms, p99 {np.percentile(d, 99):.0f} ms",
          file=sys.stderr)
    return status
