"""`agss-vos submit`: send a job to a server (HTTP or gRPC) and write its masks as they arrive."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .common import CLIError, progress


def register(sub: argparse._SubParsersAction) -> None:
    sb = sub.add_parser("submit", help="submit a job to a server and write its masks as they arrive")
    sb.add_argument("video")
    sb.add_argument("--masks", required=True)
    sb.add_argument("--server", default="http://127.0.0.1:8000", help="HTTP API base URL")
    sb.add_argument("--grpc", metavar="HOST:PORT", help="use the gRPC API at HOST:PORT instead of HTTP")
    sb.add_argument("--out", required=True)
    sb.add_argument("--options", help='JSON, e.g. {"flow": "dis", "long_side": 480}')
    sb.add_argument("--idempotency-key")
    sb.add_argument("--key", help="API key (default: AGSS_API_KEY)")
    sb.add_argument("--quiet", action="store_true")
    sb.set_defaults(func=submit)


def submit(args: argparse.Namespace) -> int:
    from ..client import Client, ClientError, GrpcClient
    from ..media.masks import read_masks, write_label_png

    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as e:
        raise CLIError(f"--options is not valid JSON ({e.msg})") from None
    palette = read_masks(args.masks).palette()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    where = args.grpc or args.server
    key = args.key or os.environ.get("AGSS_API_KEY")
    client = GrpcClient(args.grpc, key=key) if args.grpc else Client(args.server, key=key)
    try:
        with client:
            job = client.submit(args.video, args.masks, options, args.idempotency_key)
            print(f"job {job.id}: {job.frames_total} frames, objects {job.objects}", file=sys.stderr)
            with progress(job.frames_total, "frames", quiet=args.quiet) as bar:
                for f in client.frames(job.id):
                    write_label_png(out / f"{f.index:05d}.png", f.labels(job.size), palette)
                    bar.update()
                n = bar.n
    except ClientError as e:
        print(f"agss-vos: error: {where}: {e}", file=sys.stderr)
        return EXIT_USAGE if e.caller_fault else EXIT_FAILURE
    print(f"job {job.id} succeeded; {n} masks in {out}", file=sys.stderr)
    return EXIT_OK
