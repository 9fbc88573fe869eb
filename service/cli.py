"""The `agss-vos` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, classify


class CLIError(Exception):
    """A usage problem found by the CLI itself (exit code 2)."""


def _positive_int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("expected positive numbers")
    return vals


def _device(name: str):
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def cmd_segment(args: argparse.Namespace) -> int:
    from .media.inputs import inspect_inputs
    from .media.masks import write_label_png
    from .media.overlay import OverlayWriter
    from .pipeline import track
    from .progress import Progress
    from .vos import Tracker, load_model
    from .vos.checkpoint import DEFAULT_MODEL

    inputs = inspect_inputs(args.video, args.masks)
    device = _device(args.device)
    model = load_model(args.model or DEFAULT_MODEL, device=device)
    tracker = Tracker(model, flow=args.flow, long_side=args.long_side)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overlay = OverlayWriter(args.overlay, inputs.frames.fps, inputs.size, inputs.palette) if args.overlay else None
    bar = Progress(inputs.frame_count, "segment", enabled=not args.quiet)
    n = 0
    try:
        for frame, labels in track(inputs, tracker):
            write_label_png(out / f"{frame.name}.png", labels, inputs.palette)
            if overlay:
                overlay.write(frame.rgb, labels)
            n += 1
            bar.update(postfix=f"objects={tracker.num_objects}")
    finally:
        bar.close()
        if overlay:
            overlay.close()
    if not args.quiet:
        print(f"wrote {n} masks ({len(inputs.object_ids)} objects, network {tracker.net_size[1]}x"
              f"{tracker.net_size[0]}) to {out}", file=sys.stderr)
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folder, format_table
    from .vos.metrics import summarize

    scores = evaluate_folder(args.gt_dir, args.pred_dir)
    print(format_table(scores))
    if args.json:
        summary = summarize(scores)
        Path(args.json).write_text(json.dumps({
            "mean": summary,
            "objects": [{"sequence": s.sequence, "object": s.object_id, "J": s.j, "F": s.f, "J&F": s.jf}
                        for s in scores]}, indent=2))
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from .vos import convert_official

    out = convert_official(args.checkpoint, args.out_dir)
    print(f"wrote {out}")
    return EXIT_OK


def cmd_bench_model(args: argparse.Namespace) -> int:
    import torch

    from .vos.bench import bench_model, format_rows, plot_rows

    device = _device(args.device)
    rows, (h, w) = bench_model(args.config, args.long_side, tuple(args.objects), args.repeats, str(device))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    title = f"{args.config} at {w}x{h}, {where}, median of {args.repeats}"
    print(title)
    print(format_rows(rows))
    if args.plot:
        plot_rows(rows, args.plot, title)
        print(f"plot: {args.plot}")
    return EXIT_OK


def _settings(args: argparse.Namespace, **mapping):
    """Settings from the environment, overridden by the flags given on the command line."""
    from .config import Settings

    over = {k: getattr(args, a) for k, a in mapping.items() if getattr(args, a, None) is not None}
    return Settings(**over)


def cmd_worker(args: argparse.Namespace) -> int:
    from . import logs
    from .worker.runner import Worker

    settings = _settings(args, model="model", device="device", flow="flow")
    logs.setup(settings.log_level)
    if not settings.redis_url:
        raise CLIError("AGSS_REDIS_URL is not set (a worker needs the Redis that the API uses)")
    worker = Worker(settings)
    worker.install_signals()
    worker.run()
    return EXIT_OK


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from . import logs
    from .api.app import create_app

    settings = _settings(args, http_host="host", http_port="port")
    logs.setup(settings.log_level)
    if not settings.redis_url:
        raise CLIError("AGSS_REDIS_URL is not set (use `agss-vos serve` for an embedded Redis)")
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from . import logs
    from .serve import serve

    settings = _settings(args, http_host="host", http_port="port", workers="workers", model="model",
                         device="device")
    logs.setup(settings.log_level)
    return serve(settings)


def cmd_grpc(args: argparse.Namespace) -> int:
    import asyncio

    from . import logs
    from .grpc.server import serve_grpc

    settings = _settings(args, http_host="host", grpc_port="port")
    logs.setup(settings.log_level)
    if not settings.redis_url:
        raise CLIError("AGSS_REDIS_URL is not set (use `agss-vos serve` for an embedded Redis)")
    asyncio.run(serve_grpc(settings))
    return EXIT_OK


def _submit_grpc(args: argparse.Namespace, palette, out: Path) -> int:
    import grpc

    from .client import GrpcClient
    from .media.masks import write_label_png
    from .media.rle import objects_to_labels
    from .progress import Progress

    options = json.loads(args.options) if args.options else None
    with GrpcClient(args.grpc) as client:
        try:
            job = client.create_job(args.video, args.masks, options, args.idempotency_key)
            print(f"job {job.id}: {job.frames_total} frames, objects {list(job.objects)}", file=sys.stderr)
            bar = Progress(job.frames_total, "frames", enabled=not args.quiet)
            try:
                for f in client.frames(job.id):
                    labels = objects_to_labels(f["objects"], (job.height, job.width))
                    write_label_png(out / f"{f['index']:05d}.png", labels, palette)
                    bar.update()
            finally:
                bar.close()
        except grpc.RpcError as e:
            print(f"agss-vos: error: {e.code().name}: {e.details()}", file=sys.stderr)
            return EXIT_USAGE if e.code() == grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILURE
    print(f"job {job.id} succeeded; {bar.n} masks in {out}", file=sys.stderr)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from .client import Client, ClientError
    from .media.masks import read_masks, write_label_png
    from .media.rle import objects_to_labels
    from .progress import Progress

    palette = read_masks(args.masks).palette()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grpc:
        return _submit_grpc(args, palette, out)
    options = json.loads(args.options) if args.options else None
    with Client(args.server) as client:
        try:
            job = client.submit(args.video, args.masks, options, args.idempotency_key)
            print(f"job {job['id']}: {job['frames_total']} frames, objects {job['objects']}", file=sys.stderr)
            size = (job["height"], job["width"])
            bar = Progress(job["frames_total"], "frames", enabled=not args.quiet)
            try:
                for f in client.frames(job["id"]):
                    write_label_png(out / f"{f['index']:05d}.png", objects_to_labels(f["objects"], size), palette)
                    bar.update()
            finally:
                bar.close()
        except ClientError as e:
            print(f"agss-vos: error: {e}", file=sys.stderr)
            return EXIT_USAGE if 400 <= e.status < 500 else EXIT_FAILURE
        except OSError as e:
            print(f"agss-vos: error: cannot reach {args.server}: {e}", file=sys.stderr)
            return EXIT_FAILURE
    print(f"job {job['id']} succeeded; {bar.n} masks in {out}", file=sys.stderr)
    return EXIT_OK


def cmd_bench_tracker(args: argparse.Namespace) -> int:
    import torch

    from .vos import load_model
    from .vos.bench import bench_tracker
    from .vos.checkpoint import DEFAULT_MODEL

    model = load_model(args.model or DEFAULT_MODEL, device=_device(args.device))
    for k in args.objects:
        r = bench_tracker(model, k, args.frames, long_side=args.long_side, flow=args.flow)
        print(f"{args.model or DEFAULT_MODEL}: {k} objects, 854x480 input, network {r['network_w']}x{r['network_h']}, "
              f"{torch.get_num_threads()} threads: {r['seconds_per_frame']:.3f} s/frame "
              f"(last step: flow {r['flow']:.3f} s, network {r['network']:.3f} s)")
    return EXIT_OK


def cmd_bench_service(args: argparse.Namespace) -> int:
    from .bench_service import bench_service

    res = bench_service(args.video, args.masks, args.model, args.long_side, args.flow, args.rounds,
                        args.grpc_clients)
    print(res.table())
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    import time

    from .progress import Progress
    from .vos.training.loop import TrainConfig, train

    if args.config in PRESET_NAMES:
        from .vos.network import PRESETS

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
    bar = Progress(cfg.iterations, "train", unit="clips", enabled=not args.quiet)
    started = time.monotonic()

    def progress(it: int, loss: float, iou: float) -> None:
        if bar.n == 0:
            bar.n = it - 1  # resumed: count from the checkpoint
            bar.start = time.monotonic()
        bar.update(postfix=f"loss={loss:.4f} iou={iou:.3f}")

    try:
        best = train(cfg, args.data, args.out, args.val, args.device, resume=not args.restart, progress=progress,
                     log=lambda m: print(m, file=sys.stderr))
    finally:
        bar.close()
    print(f"best model: {best} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.export:
        from .vos.training.loop import training_seconds

        _export_default(best, Path(args.export), cfg, args, training_seconds(args.out))
    return EXIT_OK


def _export_default(best: Path, export: Path, cfg, args: argparse.Namespace, seconds: float) -> None:
    """Measure the trained model and the flow-only baseline in one run; write the model folder + card."""
    from .vos import load_model
    from .vos.training.datasets import load_sequences
    from .vos.training.report import compare, composites, format_table, write_card

    seqs = load_sequences(args.val)
    models = {"trained": load_model(best), "flow-only": load_model("flow-only")}
    single = compare(models, seqs, cfg.flow, cfg.model["long_side"])
    multi = compare(models, composites(seqs, 4), cfg.flow, cfg.model["long_side"])
    print(format_table(single), file=sys.stderr)
    print(format_table(multi), file=sys.stderr)
    import torch

    from .vos.bench import bench_tracker

    speed = bench_tracker(models["trained"], objects=3, frames=30)
    print(f"3 objects: {speed['seconds_per_frame']:.3f} s/frame", file=sys.stderr)
    write_card(best, export, cfg, [str(d) for d in args.data], {"real": single, "composites": multi},
               str(args.val), {"training_run": {"seconds": round(seconds), "device": args.device},
                               "speed": {"seconds_per_frame_3_objects": round(speed["seconds_per_frame"], 3),
                                         "input": "854x480", "network": f"{speed['network_w']}x{speed['network_h']}",
                                         "device": f"cpu, {torch.get_num_threads()} threads",
                                         "measured_by": "agss-vos bench tracker (in the export run)"}})
    print(f"wrote {export}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from .vos import load_model
    from .vos.training.datasets import load_sequences
    from .vos.training.report import compare, composites, format_table

    seqs = load_sequences(args.data)
    models = {name: load_model(name, device=args.device) for name in args.models.split(",")}
    # Every model at the same network size, so that the flow they share sees the same frames.
    long_side = args.long_side or next(iter(models.values())).config.long_side
    print(f"J&F, DAVIS protocol, flow {args.flow}, network long side {long_side}, on {args.data} "
          f"({len(seqs)} sequences)")
    print(format_table(compare(models, seqs, args.flow, long_side)))
    if args.composites:
        print(f"\nmulti-object composites made from the same sequences ({args.composites})")
        print(format_table(compare(models, composites(seqs, args.composites), args.flow, long_side)))
    return EXIT_OK


PRESET_NAMES = ("resnet50", "resnet34", "resnet18", "lite")


def build_parser() -> argparse.ArgumentParser:
    from .vos.flow import FLOW_NAMES
    from .vos.network import PRESETS

    p = argparse.ArgumentParser(prog="agss-vos", description="AGSS-VOS video object segmentation.")
    p.add_argument("--version", action="version", version=f"agss-vos {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("segment", help="segment a video offline (no server)",
                       description="Track the objects of the first-frame masks through a video and write one "
                                   "indexed PNG per frame.")
    s.add_argument("video", help="video file, folder of frames, or zip of frames")
    s.add_argument("--masks", required=True, help="indexed PNG of the first frame, {0,255} PNG, or folder/zip "
                                                  "of PNGs named after frames")
    s.add_argument("--out", required=True, help="output folder for the PNG masks")
    s.add_argument("--model", help="model folder, official .pth, or model name (default: agss-lite)")
    s.add_argument("--flow", choices=FLOW_NAMES, default="dis", help="optical flow (default: dis)")
    s.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    s.add_argument("--long-side", type=int, help="network input long side, a multiple of 32 "
                                                 "(default: the model's)")
    s.add_argument("--overlay", help="also write an overlay video (mp4)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("eval", help="DAVIS J&F of predicted masks against ground truth")
    e.add_argument("gt_dir", help="sequence folder, folder of sequences, or DAVIS root")
    e.add_argument("pred_dir", help="predictions: PNGs (one sequence) or one folder per sequence")
    e.add_argument("--json", help="also write the scores as JSON here")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("convert", help="convert an official AGSS-VOS .pth into a model folder")
    c.add_argument("checkpoint")
    c.add_argument("out_dir")
    c.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    bm = bsub.add_parser("model", help="network frame step: single-shot vs one pass per object")
    bm.add_argument("--config", choices=sorted(PRESETS), default="resnet50")
    bm.add_argument("--long-side", type=int, help="network long side (default: the config's)")
    bm.add_argument("--objects", type=_positive_int_list, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    bm.add_argument("--repeats", type=int, default=3)
    bm.add_argument("--device", default="cpu")
    bm.add_argument("--plot", help="write a PNG plot here")
    bm.set_defaults(func=cmd_bench_model)
    bt = bsub.add_parser("tracker", help="seconds per tracker step (flow + network + labels) at the model's size")
    bt.add_argument("--model", help="model (default: agss-lite)")
    bt.add_argument("--objects", type=_positive_int_list, default=[1, 3])
    bt.add_argument("--frames", type=int, default=20)
    bt.add_argument("--long-side", type=int)
    bt.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    bt.add_argument("--device", default="cpu")
    bt.set_defaults(func=cmd_bench_tracker)
    bs = bsub.add_parser("service", help="frames per second through the whole service vs the tracker alone")
    bs.add_argument("video")
    bs.add_argument("--masks", required=True)
    bs.add_argument("--model", default=None, help="model (default: agss-lite)")
    bs.add_argument("--long-side", type=int)
    bs.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    bs.add_argument("--rounds", type=int, default=3, help="alternating rounds of each path (best of each)")
    bs.add_argument("--grpc-clients", type=int, default=50,
                    help="also time the gRPC path with 1 and with this many streaming clients (0: skip)")
    bs.set_defaults(func=cmd_bench_service)

    tr = sub.add_parser("train", help="train AGSS-VOS (resumable; validation J&F logged)")
    tr.add_argument("--config", required=True, help=f"a JSON training config or a preset: {', '.join(PRESET_NAMES)}")
    tr.add_argument("--data", action="append", required=True, help="training sequences (repeatable)")
    tr.add_argument("--out", required=True, help="run folder: last.pt, log.jsonl, best/, final/")
    tr.add_argument("--val", help="validation sequences (J&F every val_every iterations)")
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--iterations", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--val-every", type=int)
    tr.add_argument("--checkpoint-every", type=int)
    tr.add_argument("--restart", action="store_true", help="ignore the run folder's last checkpoint")
    tr.add_argument("--export", help="after training: write the best model here with a measured model card")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)

    va = sub.add_parser("validate", help="J&F of several models on annotated sequences, in one run")
    va.add_argument("--models", default="agss-lite,flow-only", help="comma-separated model names or paths")
    va.add_argument("--data", required=True, help="annotated sequences (DAVIS layouts)")
    va.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    va.add_argument("--long-side", type=int, help="network long side for every model (default: the first model's)")
    va.add_argument("--composites", type=int, default=0, help="also N multi-object composites of the data")
    va.add_argument("--device", default="cpu")
    va.set_defaults(func=cmd_validate)

    from .config import describe

    env_help = "settings (environment variables):\n" + describe()
    fmt = argparse.RawDescriptionHelpFormatter
    sv = sub.add_parser("serve", help="run everything: Redis (embedded if AGSS_REDIS_URL is unset), API, workers",
                        epilog=env_help, formatter_class=fmt)
    sv.add_argument("--host", help="HTTP bind address (AGSS_HTTP_HOST)")
    sv.add_argument("--port", type=int, help="HTTP port (AGSS_HTTP_PORT)")
    sv.add_argument("--workers", type=int, help="worker processes (AGSS_WORKERS)")
    sv.add_argument("--model", help="model name, folder or checkpoint (AGSS_MODEL)")
    sv.add_argument("--device", help="cpu or cuda (AGSS_DEVICE)")
    sv.set_defaults(func=cmd_serve)
    ap = sub.add_parser("api", help="the HTTP API alone (needs AGSS_REDIS_URL)", epilog=env_help, formatter_class=fmt)
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.set_defaults(func=cmd_api)
    gr = sub.add_parser("grpc", help="the gRPC API alone (needs AGSS_REDIS_URL)", epilog=env_help,
                        formatter_class=fmt)
    gr.add_argument("--host")
    gr.add_argument("--port", type=int)
    gr.set_defaults(func=cmd_grpc)
    wk = sub.add_parser("worker", help="one worker process (needs AGSS_REDIS_URL)", epilog=env_help,
                        formatter_class=fmt)
    wk.add_argument("--model")
    wk.add_argument("--device")
    wk.add_argument("--flow", choices=FLOW_NAMES)
    wk.set_defaults(func=cmd_worker)
    sb = sub.add_parser("submit", help="submit a job to a server and write its masks as they arrive")
    sb.add_argument("video")
    sb.add_argument("--masks", required=True)
    sb.add_argument("--server", default="http://127.0.0.1:8000", help="HTTP API base URL")
    sb.add_argument("--grpc", metavar="HOST:PORT", help="use the gRPC API at HOST:PORT instead of HTTP")
    sb.add_argument("--out", required=True)
    sb.add_argument("--options", help='JSON, e.g. {"flow": "dis", "long_side": 480}')
    sb.add_argument("--idempotency-key")
    sb.add_argument("--quiet", action="store_true")
    sb.set_defaults(func=cmd_submit)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CLIError as e:
        print(f"agss-vos: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - expected errors become one line, bugs keep their traceback
        spec = classify(e)
        if spec is None:
            raise
        print(f"agss-vos: error: {e}", file=sys.stderr)
        return spec.exit


if __name__ == "__main__":
    sys.exit(main())
