"""`agss-vos bench model | tracker | service`: benchmarks that compare two things in one run."""

from __future__ import annotations

import argparse
import sys

from ..errors import EXIT_OK
from ..vos.options import BACKEND_NAMES, DEFAULT_MODEL, FLOW_NAMES, PRESET_NAMES
from .common import CLIError, device, positive_int_list


def backend_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [n for n in names if n not in ("auto", *BACKEND_NAMES)]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"expected backends among auto, {', '.join(BACKEND_NAMES)} separated by "
                                         f"commas, got {text!r}")
    return list(dict.fromkeys(names))


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    bm = bsub.add_parser("model", help="network frame step: single-shot vs one pass per object")
    bm.add_argument("--config", choices=PRESET_NAMES, default="resnet50")
    bm.add_argument("--long-side", type=int, help="network long side (default: the config's)")
    bm.add_argument("--objects", type=positive_int_list, default=[1, 2, 4, 8], help="e.g. 1,2,4,8")
    bm.add_argument("--repeats", type=int, default=3)
    bm.add_argument("--device", default="cpu")
    bm.add_argument("--plot", help="write a PNG plot here")
    bm.set_defaults(func=model)

    bt = bsub.add_parser("tracker", help="seconds per tracker step (flow + network + labels) at the model's size")
    bt.add_argument("--model", help=f"models to time in the same run, interleaved, e.g. agss-lite,runs/x/final "
                                    f"(default: {DEFAULT_MODEL}); a preset name ({', '.join(PRESET_NAMES)}) that "
                                    f"is no model times that architecture untrained (speed only); ratios are "
                                    f"against the first")
    bt.add_argument("--objects", type=positive_int_list, default=[1, 3])
    bt.add_argument("--frames", type=int, default=20)
    bt.add_argument("--long-side", type=int)
    bt.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    bt.add_argument("--occlusions", choices=("on", "off", "both"), default="on",
                    help="the tracker's occlusion handling (a second flow per frame); both: every model timed "
                         "with it off, then on, interleaved (default: on)")
    bt.add_argument("--device", default="cpu")
    bt.add_argument("--backend", type=backend_list, default=["auto"],
                    help=f"inference backends to time in the same run, interleaved, e.g. torch,onnxruntime "
                         f"(of auto, {', '.join(BACKEND_NAMES)}; default: auto, the one a worker on this device "
                         f"runs by default); ratios are against the first")
    bt.set_defaults(func=tracker)

    bs = bsub.add_parser("service", help="frames per second through the whole service vs the tracker alone")
    bs.add_argument("video")
    bs.add_argument("--masks", required=True)
    bs.add_argument("--model", default=None, help=f"model (default: {DEFAULT_MODEL})")
    bs.add_argument("--long-side", type=int)
    bs.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    bs.add_argument("--rounds", type=int, default=3, help="alternating rounds of each path (best of each)")
    bs.add_argument("--grpc-clients", type=int, default=50,
                    help="also time the gRPC path with 1 and with this many streaming clients (0: skip)")
    bs.set_defaults(func=service)

    bl = bsub.add_parser("live", help="live sessions: frame-to-masks delay and drops, WebSocket and gRPC, "
                                      "next to the tracker's step")
    bl.add_argument("video")
    bl.add_argument("--masks", required=True)
    bl.add_argument("--model", default=None, help=f"model (default: {DEFAULT_MODEL})")
    bl.add_argument("--long-side", type=int)
    bl.add_argument("--flow", choices=FLOW_NAMES, default="dis")
    bl.add_argument("--rates", type=lambda t: [float(v) for v in t.split(",")],
                    help="frames per second to send, e.g. 2,10 (default: half and twice what the tracker sustains)")
    bl.add_argument("--frames", type=int, help="send this many frames (the video played forward and back)")
    bl.add_argument("--failover", action="store_true",
                    help="instead: SIGKILL the session's worker a third of the way in (two workers), and report "
                         "the delay before, during and after the takeover")
    bl.set_defaults(func=live)

    bk = bsub.add_parser("takeover", help="a killed worker's job: takeover to next frame, checkpoints vs replay")
    bk.add_argument("video", help="a long video (the job is killed after --kill-at frames)")
    bk.add_argument("--masks", required=True)
    bk.add_argument("--model", default=None, help=f"model (default: {DEFAULT_MODEL})")
    bk.add_argument("--long-side", type=int)
    bk.add_argument("--kill-at", type=positive_int_list, default=[10, 200], help="e.g. 10,200")
    bk.set_defaults(func=takeover)

    bm = bsub.add_parser("memory", help="peak memory of the worker and the API over video length, through a job "
                                        "and a live session")
    bm.add_argument("--frames", type=positive_int_list, default=[100, 10_000], help="video lengths, e.g. 100,10000")
    bm.add_argument("--model", default=None, help=f"model (default: {DEFAULT_MODEL})")
    bm.add_argument("--long-side", type=int)
    bm.add_argument("--paths", default="job,session", help="job, session or both (job,session)")
    bm.set_defaults(func=memory)


def model(args: argparse.Namespace) -> int:
    import torch

    from ..bench.model import bench_model, format_rows, plot_rows

    dev = device(args.device)
    rows, (h, w) = bench_model(args.config, args.long_side, tuple(args.objects), args.repeats, str(dev))
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    title = f"{args.config} at {w}x{h}, {where}, median of {args.repeats}"
    print(title)
    print(format_rows(rows))
    if args.plot:
        plot_rows(rows, args.plot, title)
        print(f"plot: {args.plot}")
    return EXIT_OK


def tracker(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..bench.tracker import bench_backends
    from ..vos.backends import resolve_backend, wrap

    dev = device(args.device)
    if "auto" in args.backend:  # what the service runs (Settings.backend defaults to auto)
        print(f"backend auto: {resolve_backend('auto', dev)} (what a worker on {dev.type} runs unless "
              f"AGSS_BACKEND says otherwise)")
    backends = list(dict.fromkeys(resolve_backend(b, dev) for b in args.backend))
    names = list(dict.fromkeys(n.strip() for n in (args.model or DEFAULT_MODEL).split(",") if n.strip()))
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.occlusions]
    models, occlusions = {}, {}
    for name in names:
        net = _bench_model(name, dev)
        for b in backends:
            t0 = time.perf_counter()
            label = name if len(backends) == 1 else f"{name} [{b}]"
            compiled = wrap(net, b)
            if b != "torch":
                print(f"{label}: ready in {time.perf_counter() - t0:.1f} s")
            for occ in modes:
                tagged = label if len(modes) == 1 else f"{label} [occlusions {'on' if occ else 'off'}]"
                models[tagged], occlusions[tagged] = compiled, occ
    base = next(iter(models))
    for k in args.objects:
        rows = bench_backends(models, k, args.frames, long_side=args.long_side, flow=args.flow,
                              occlusions=occlusions)
        for r in rows:
            st = r.stages
            print(f"{r.backend}: {k} objects, 854x480 input, network {r.network_w}x{r.network_h}, "
                  f"{torch.get_num_threads()} threads: {r.seconds_per_frame:.3f} s/frame "
                  f"(flow {st['flow']:.3f} s, network {st['network']:.3f} s, labels/rest {st['rest']:.3f} s)")
        for r in rows[1:]:
            # Labels are compared only between backends of one model: other models' masks differ by design.
            same = "" if len(names) > 1 or len(modes) > 1 else (f"; labels differ from {base}'s on at most "
                                              f"{100 * r.label_mismatch:.3f}% of pixels in a frame")
            print(f"  {k} objects: {r.backend} {rows[0].seconds_per_frame / r.seconds_per_frame:.2f}x the speed of "
                  f"{base} (network alone {rows[0].stages['network'] / r.stages['network']:.2f}x){same}")
    return EXIT_OK


def _bench_model(name: str, dev):
    """A model by name or path; a preset name that is no model gives that architecture, untrained."""
    from ..vos.checkpoint import load_model
    from ..vos.errors import ModelNotFoundError
    from ..vos.network import AGSSVOS, PRESETS

    try:
        return load_model(name, device=dev)
    except ModelNotFoundError:
        if name not in PRESETS:
            raise
        print(f"{name}: no such model; timing the {name} preset untrained (speed only)")
        return AGSSVOS(PRESETS[name]).to(dev).eval()


def service(args: argparse.Namespace) -> int:
    from ..bench.service import bench_service

    res = bench_service(args.video, args.masks, args.model, args.long_side, args.flow, args.rounds,
                        args.grpc_clients)
    print(res.table())
    return EXIT_OK


def live(args: argparse.Namespace) -> int:
    from ..bench.live import bench_failover, bench_live

    if args.failover:
        fps = args.rates[0] if args.rates else 5.0
        print(bench_failover(args.video, args.masks, args.model, args.long_side, args.flow, fps,
                             args.frames or 150).table())
        return EXIT_OK
    print(bench_live(args.video, args.masks, args.model, args.long_side, args.flow, args.rates, args.frames).table())
    return EXIT_OK


def takeover(args: argparse.Namespace) -> int:
    from ..bench.takeover import bench_takeover, format_rows

    print(format_rows(bench_takeover(args.video, args.masks, tuple(args.kill_at), args.model, args.long_side)))
    return EXIT_OK


def memory(args: argparse.Namespace) -> int:
    from ..bench.memory import bench_memory, format_rows

    paths = tuple(p for p in args.paths.split(",") if p)
    if not paths or set(paths) - {"job", "session"}:
        raise CLIError(f"--paths {args.paths}: job, session or job,session")
    rows = bench_memory(tuple(args.frames), args.model, args.long_side, paths,
                        log=lambda m: print(m, file=sys.stderr))
    print(format_rows(rows))
    return EXIT_OK
