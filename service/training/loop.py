"""The training loop (the paper's recipe, sized for one machine).

Each iteration is one clip: the reference frame with its masks, then T-1 steps where the network
sees the frame and its previous prediction warped by optical flow; the ground truth replaces a
prediction whose IoU falls below 0.5. Soft IoU per object. Adam (weight decay 4e-5) with poly decay,
the pretrained encoder at a tenth of the rate of the new parts (mask branch, attention, decoder).
Deterministic for a seed: clip i is drawn from a generator seeded with (seed, i). Resumable: the last
checkpoint holds weights, optimiser state and the iteration; a finished run continues when asked for
more iterations (the poly schedule is then stretched over the new total).

Beyond the paper: a static-image stage (clips made from still images with instance masks, mixed in
at a higher rate for the first `static_iterations`), fast clips (large displacements, motion blur,
small objects), and the previous-mask input corrupted during training (shifted, rescaled, dilated,
eroded, cut, dropped, with false blobs) so that the network learns to correct it rather than copy it;
composites whose objects leave the frame or meet another within the clip, and a loss that penalises
what an object absent from a frame still predicts (`soft_iou_loss`), so that it learns to let go.
A run may start from another model's weights (`init`): a second stage on top of an earlier run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..vos.checkpoint import save_model
from ..vos.flow import carry, make_flow
from ..vos.metrics import SequenceScorer, summarize
from ..vos.network import AGSSVOS, EFFNETS, OPTIONAL_INPUTS, PRESETS, AGSSConfig
from ..vos.tracker import Tracker
from .clips import Clip, make_clip
from .datasets import Sequence, StillImage, is_coco, load_coco, load_sequences


@dataclass
class TrainConfig:
    model: dict = field(default_factory=lambda: PRESETS["lite"].to_dict())
    iterations: int = 6000
    clip_length: int = 4
    crop: tuple[int, int] = (224, 384)  # (h, w), multiples of 32
    lr: float = 1e-3  # new parts; the pretrained encoder gets lr * encoder_lr_scale
    encoder_lr_scale: float = 0.1
    # The layers of the optional inputs (AGSSConfig.others, match) start at zero beside trained layers whose
    # activations are several units large; at the base rate they would take tens of thousands of clips to matter.
    input_lr_scale: float = 1.0
    weight_decay: float = 4e-5
    poly_power: float = 0.9
    p_composite: float = 0.5
    p_synthetic: float = 0.15
    iou_fallback: float = 0.5
    # Not in the paper: a cross-entropy term keeps gradients alive where the soft IoU's vanish
    # (saturated probabilities), which short CPU runs cannot afford to wait out.
    bce_weight: float = 0.5
    pretrained: bool = True
    flow: str = "dis"
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int = 1000
    val_long_side: int | None = None
    val_max_frames: int | None = None
    # Static-image clips (from `--data` folders in COCO layout): p_static of all clips, or
    # p_static_stage during the first static_iterations (the static-image stage).
    p_static: float = 0.0
    p_static_stage: float = 0.0
    static_iterations: int = 0
    p_fast: float = 0.0  # fraction of clips made fast (large displacements, blur, small objects)
    # Probability that one object's previous mask, as fed to the network, is corrupted at a step.
    p_corrupt: float = 0.0
    # Fraction of the real clips whose reference frame is far from the frames propagated (clips.real_clip).
    p_far_reference: float = 0.0
    # Fraction of the composites' pasted objects made to leave the frame or meet another (clips.composite_clip).
    p_exit: float = 0.0
    # Objects absent from a target frame are penalised for what they still predict (soft_iou_loss).
    absent_loss: bool = False
    # The previous masks warped as the tracker warps them with its occlusion handling (flow.drop_uncovered):
    # what an object uncovered does not inherit its mask; a second flow per step.
    occlusions: bool = False
    init: str | None = None  # a model folder whose weights start this run (instead of ImageNet)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        raw = json.loads(Path(path).read_text())
        if "crop" in raw:
            raw["crop"] = tuple(raw["crop"])
        return cls(**raw)


def soft_iou_loss(probs: torch.Tensor, target: torch.Tensor, absent_area: torch.Tensor | None = None) -> torch.Tensor:
    """1 - sum(min(P,Y)) / sum(max(P,Y)) per object (K,H,W), averaged over objects.

    An object absent from the target (left the frame, hidden behind another) has no overlap to gain: its
    soft IoU is 1 whatever it predicts, with no gradient, so only the cross-entropy term ever taught the
    network to let go of it. With `absent_area` (K,), each object's area where propagation started, such an
    object's loss is S / (S + a) instead, S its predicted area: 0 when nothing is predicted, 1/2 when a
    whole object's worth is, with a gradient per pixel of the same order as the soft IoU's (1/a).
    """
    inter = torch.minimum(probs, target).flatten(1).sum(1)
    union = torch.maximum(probs, target).flatten(1).sum(1).clamp_min(1e-6)
    loss = 1 - inter / union
    if absent_area is not None:
        area = probs.flatten(1).sum(1)
        absent = target.flatten(1).sum(1) == 0
        loss = torch.where(absent, area / (area + absent_area.clamp_min(1.0)), loss)
    return loss.mean()


def bce_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy on the normalised probabilities (K,H,W)."""
    p = probs.clamp(1e-6, 1 - 1e-6)
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


def _iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p, t = pred > 0.5, target > 0.5
    union = (p | t).flatten(1).sum(1)
    inter = (p & t).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union, dtype=torch.float))


def build(cfg: TrainConfig, device: torch.device) -> tuple[AGSSVOS, torch.optim.Optimizer]:
    model = AGSSVOS(AGSSConfig.from_dict(cfg.model))
    if cfg.init:
        from ..vos.checkpoint import load_model

        start = load_model(cfg.init)
        have, want = start.config, model.config
        dropped = [o for o in OPTIONAL_INPUTS if getattr(have, o) and not getattr(want, o)]
        if have.backbone != want.backbone or have.width != want.width or dropped:
            raise ValueError(f"init {cfg.init}: a {have.backbone} / width {have.width} model"
                             f"{''.join(f' with {o}' for o in dropped)}, the config asks for "
                             f"{want.backbone} / width {want.width}"
                             f"{''.join(f' without {o}' for o in dropped)}")
        # A model without an optional input starts one with it: its layer stays at zero, the outputs the same.
        added = [o for o in OPTIONAL_INPUTS if getattr(want, o) and not getattr(have, o)]
        model.load_state_dict(start.state_dict(), strict=not added)
    elif cfg.pretrained and model.config.backbone in EFFNETS:
        from ..vos.effnet import load_imagenet_weights

        net = model.Encoder
        load_imagenet_weights(_Proxy(net), model.config.backbone)  # fills conv_stem, bn0, blocks in place
        torch.nn.init.zeros_(net.conv1_p.weight)  # the mask starts as a no-op on the pretrained stem
        torch.nn.init.zeros_(net.conv1_p.bias)
    model.to(device)
    enc, new, inputs = model.parameter_groups()
    groups = [(enc, cfg.lr * cfg.encoder_lr_scale), (new, cfg.lr), (inputs, cfg.lr * cfg.input_lr_scale)]
    # A model without optional inputs has two groups, so that the runs saved before them still resume.
    opt = torch.optim.Adam([{"params": p, "lr": lr, "base": lr} for p, lr in groups if p],
                           weight_decay=cfg.weight_decay)
    return model, opt


class _Proxy(torch.nn.Module):
    """Presents the encoder's EfficientNet parts under the package's key names for loading."""

    def __init__(self, enc):
        super().__init__()
        self._conv_stem, self._bn0, self._blocks = enc.conv_stem, enc.bn0, enc.blocks


def corrupt_masks(masks: torch.Tensor, rng: np.random.Generator, p: float) -> torch.Tensor:
    """Previous masks (K,H,W) in [0,1] -> the same with each object, with probability p, damaged the way a
    wrong flow or a drifting prediction damages it: shifted and rescaled (the flow missed a fast
    object), dilated or eroded, a piece cut away (lost thin parts), a false blob added (a distractor
    taken for the object) or, rarely, dropped altogether. The targets stay exact: the network has to
    recover the object from the image and the reference, not copy its input."""
    if p <= 0 or masks.shape[0] == 0:
        return masks
    k, h, w = masks.shape
    out = masks.clone()
    for i in range(k):
        if rng.random() >= p:
            continue
        m = out[i][None, None]
        ys, xs = torch.nonzero(m[0, 0] > 0.5, as_tuple=True)
        extent = float(max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1)) if len(ys) else 0.1 * w
        kind = rng.random()
        if kind < 0.07:
            out[i] = 0
            continue
        if kind < 0.55:  # shift (often by much of the object's size) and rescale about the object
            dx, dy = rng.normal(0, 0.35 * extent, 2)
            s = float(np.exp(rng.normal(0, 0.15)))
            cx = float(xs.float().mean()) if len(xs) else w / 2
            cy = float(ys.float().mean()) if len(ys) else h / 2
            # affine_grid maps output to input coordinates in [-1,1] units: output pixel x samples the
            # input at cx + (x - cx - dx) / s; the offset is where the output's centre pixel samples.
            bx = (2 * (cx + ((w - 1) / 2 - cx - dx) / s) + 1) / w - 1
            by = (2 * (cy + ((h - 1) / 2 - cy - dy) / s) + 1) / h - 1
            theta = torch.tensor([[1 / s, 0, bx], [0, 1 / s, by]], dtype=m.dtype)
            grid = F.affine_grid(theta[None].to(m.device), list(m.shape), align_corners=False)
            m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if rng.random() < 0.5:  # dilate or erode by up to a tenth of the object's size
            r = int(rng.integers(1, max(2, int(0.1 * extent) + 1)))
            kk = 2 * r + 1
            m = F.max_pool2d(m, kk, 1, r) if rng.random() < 0.5 else -F.max_pool2d(-m, kk, 1, r)
        if rng.random() < 0.3:  # cut a random box out (a limb, a wheel, the thin end of the object)
            bh, bw = int(rng.integers(1, max(2, h // 4))), int(rng.integers(1, max(2, w // 4)))
            y0 = int(ys[int(rng.integers(len(ys)))]) - bh // 2 if len(ys) else int(rng.integers(h))
            x0 = int(xs[int(rng.integers(len(xs)))]) - bw // 2 if len(xs) else int(rng.integers(w))
            m = m.clone()
            m[..., max(y0, 0):max(y0 + bh, 0), max(x0, 0):max(x0 + bw, 0)] = 0
        if rng.random() < 0.2:  # a false blob somewhere else
            blob = np.zeros((h, w), np.float32)
            r = max(2, int(rng.uniform(0.1, 0.5) * extent))
            cv2.ellipse(blob, (int(rng.integers(w)), int(rng.integers(h))), (r, max(2, int(r * rng.uniform(0.4, 1)))),
                        float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            m = torch.maximum(m, torch.from_numpy(blob).to(m)[None, None])
        out[i] = m[0, 0].clamp(0, 1)
    return out


Flows = list[tuple[np.ndarray, "np.ndarray | None"]]


def clip_flows(clip: Clip, flow: Callable[[np.ndarray, np.ndarray], np.ndarray], occlusions: bool) -> Flows:
    """The flows (H,W,2) each step of a clip warps its previous masks with: (backward, forward) per frame
    propagated to, from the frame where propagation starts; forward only with `occlusions`. They depend
    on the frames alone, so a loader worker can compute them ahead of the step."""
    grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip.frames]
    return [(flow(grays[t], grays[t - 1]), flow(grays[t - 1], grays[t]) if occlusions else None)
            for t in range(clip.start + 1, len(clip.frames))]


def train_step(model: AGSSVOS, clip: Clip, flows: Flows, device: torch.device, cfg: TrainConfig,
               amp: torch.dtype | None = None, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, float]:
    """One clip with its `clip_flows`: forward through time, loss summed over steps, the network under
    autocast to `amp` (bfloat16 or float16) when given. Returns (loss, mean IoU). `rng` draws the
    corruption of the previous masks (cfg.p_corrupt)."""
    ids = clip.ids
    gts = torch.from_numpy(np.stack([(clip.labels == i) for i in ids], 1).astype(np.float32)).to(device)  # (T,K,H,W)
    images = [model.preprocess(f) for f in clip.frames]
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        ref = model.encode_reference(images[0], gts[0])
        prev = gts[clip.start]  # a far reference frame is not propagated from
        seen = prev.flatten(1).sum(1) if cfg.absent_loss else None  # (K,) areas where propagation starts
        losses, ious = [], []
        for t, (backward, forward) in enumerate(flows, clip.start + 1):
            warped = carry(prev, backward, forward)
            if rng is not None:
                warped = corrupt_masks(warped, rng, cfg.p_corrupt)
            probs = model(images[t], warped, ref).float()
            losses.append(soft_iou_loss(probs, gts[t], seen) + cfg.bce_weight * bce_loss(probs, gts[t]))
            with torch.no_grad():
                iou = _iou(probs, gts[t])
                ious.append(float(iou.mean()))
                keep = (iou >= cfg.iou_fallback).float()[:, None, None]
                prev = probs.detach() * keep + gts[t] * (1 - keep)
        loss = torch.stack(losses).mean()
    return loss, float(np.mean(ious))


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """--amp (auto, bf16, fp16, off) -> the autocast dtype for this device, None for full precision.
    auto: bfloat16 on a GPU that has it (no loss scaling needed), float16 on an older one, off on the CPU,
    where autocast is slower than float32 on most processors."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp {amp!r}: choose auto, bf16, fp16 or off")
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass
class Draw:
    """What one iteration trains on: its clip, the clip's flows, and the iteration's generator as the clip
    left it (it goes on to draw the corruption of the previous masks)."""

    clip: Clip
    flows: Flows
    rng: np.random.Generator


class Clips(torch.utils.data.Dataset):
    """Iteration i -> its Draw, the same in any process: the clip comes from a generator seeded with
    (seed, i). With loader workers, clips and flows are made on other cores while the network trains."""

    def __init__(self, cfg: TrainConfig, seqs: list[Sequence], images: list[StillImage], start: int):
        self.cfg, self.seqs, self.images, self.start = cfg, seqs, images, start
        self._flow = None

    def __len__(self) -> int:
        return max(self.cfg.iterations - self.start, 0)

    def __getitem__(self, i: int) -> Draw:
        cfg, it = self.cfg, self.start + i
        if self._flow is None:
            self._flow = make_flow(cfg.flow)
        rng = np.random.default_rng([cfg.seed, it])
        p_static = cfg.p_static_stage if it < cfg.static_iterations else cfg.p_static
        clip = make_clip(self.seqs, rng, cfg.clip_length, cfg.crop, cfg.p_composite, cfg.p_synthetic,
                         images=self.images, p_static=p_static, p_fast=cfg.p_fast,
                         p_far_reference=cfg.p_far_reference, p_exit=cfg.p_exit)
        return Draw(clip, clip_flows(clip, self._flow, cfg.occlusions), rng)


def _as_is(draw: Draw) -> Draw:
    return draw


def draws(clips: Clips, workers: int):
    """The Draws in iteration order, made in this process or, ahead of time, by `workers` processes."""
    if workers <= 0:
        return (clips[i] for i in range(len(clips)))
    loader = torch.utils.data.DataLoader(clips, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_as_is, prefetch_factor=4)
    # Each worker is one core's worth, so OpenCV's thread pool would only oversubscribe; and a forked child
    # that resizes the pool it inherited deadlocks. So the workers are forked with a pool of one; the
    # training process gets its own back once they are started (the loader forks them in iter()).
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)


@torch.no_grad()
def evaluate(model: torch.nn.Module, seqs: list[Sequence], flow: str, long_side: int | None,
             max_frames: int | None = None, occlusions: bool = True) -> dict[str, float]:
    """J&F per sequence (DAVIS protocol) of the tracker with this model; 'mean' over all objects."""
    model.eval()
    scores = []
    out = {}
    for seq in seqs:
        tracker = Tracker(model, flow=flow, long_side=long_side, occlusions=occlusions)
        scorer = SequenceScorer(seq.name)
        n = len(seq.frames) if max_frames is None else min(max_frames, len(seq.frames))
        for t in range(n):
            pred = tracker.step(seq.frames[t], seq.labels[t] if t == 0 else None)
            scorer.add(seq.labels[t], pred)
        res = scorer.result()
        scores += res
        out[seq.name] = summarize(res)["J&F"]
    out["mean"] = summarize(scores)["J&F"]
    return out


def train(cfg: TrainConfig, data: list[str | Path], out: str | Path, val_data: str | Path | None = None,
          device: str = "cpu", resume: bool = True, progress: Callable | None = None,
          log: Callable[[str], None] = print, amp: str = "auto", workers: int = 0,
          after_step: Callable[[int, AGSSVOS], None] | None = None) -> Path:
    """Train; returns the folder of the best model (by validation J&F), or of the last one. `amp`: see
    amp_dtype. `workers` processes make the clips ahead of the network (the same clips as without).
    `after_step(iterations done, model)` runs after each optimizer step, before progress and checkpoints:
    replicas training side by side average their weights there (tools/gpu_session.py)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    seqs = [s for d in data if not is_coco(d) for s in load_sequences(d)]
    images: list[StillImage] = [im for d in data if is_coco(d) for im in load_coco(d)]
    if not seqs:
        raise FileNotFoundError("training needs at least one folder of annotated video sequences")
    if (cfg.p_static or cfg.p_static_stage) and not images:
        raise FileNotFoundError("p_static > 0 needs a --data folder of still images (COCO layout: instances.json, "
                                "images/)")
    val = load_sequences(val_data) if val_data else []
    model, opt = build(cfg, dev)
    dtype = amp_dtype(amp, dev)
    # float16 needs its loss scaled against underflowing gradients; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    start, best, before_s = 0, -1.0, 0.0
    last = out / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, best = int(ck["iteration"]), float(ck["best"])
        before_s = float(ck.get("seconds", _logged_seconds(out / "log.jsonl")))
        log(f"resumed from {last} at iteration {start}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    log_path = out / "log.jsonl"
    if val and start == 0 and not (out / "baseline.json").exists():
        from ..vos.baseline import FlowOnlyModel

        base = evaluate(FlowOnlyModel().to(dev), val, cfg.flow, cfg.val_long_side or model.config.long_side,
                        cfg.val_max_frames)
        (out / "baseline.json").write_text(json.dumps(base, indent=2))
        log(f"flow-only baseline J&F: {base['mean']:.4f}")
    window: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def spent() -> float:
        """Training seconds over every process of this run (resumes included)."""
        return before_s + time.monotonic() - t0

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the crop is fixed; only the object count varies
    for it, draw in zip(range(start, cfg.iterations), draws(Clips(cfg, seqs, images, start), workers), strict=True):
        model.train()
        # Batch norm statistics stay frozen: a batch of one clip cannot estimate them.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        frac = 1 - it / cfg.iterations
        for g in opt.param_groups:
            g["lr"] = g["base"] * frac**cfg.poly_power
        loss, iou = train_step(model, draw.clip, draw.flows, dev, cfg, dtype,
                               rng=draw.rng if cfg.p_corrupt > 0 else None)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        window = (window + [(loss.item(), iou)])[-50:]
        if after_step:
            after_step(it + 1, model)
        if progress:
            progress(it + 1, float(np.mean([w[0] for w in window])), float(np.mean([w[1] for w in window])))
        done = it + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
            _save(last, model, opt, done, best, spent())
        if val and (done % cfg.val_every == 0 or done == cfg.iterations):
            scores = evaluate(model, val, cfg.flow, cfg.val_long_side or model.config.long_side, cfg.val_max_frames)
            entry = {"iteration": done, "val": scores, "loss": float(np.mean([w[0] for w in window])),
                     "elapsed_s": round(spent(), 1)}
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            log(f"iteration {done}: validation J&F {scores['mean']:.4f}")
            if scores["mean"] > best:
                best = scores["mean"]
                save_model(model, out / "best", provenance={"iteration": done, "val_jf": scores})
            _save(last, model, opt, done, best, spent())
    final = save_model(model, out / "final", provenance={"iteration": cfg.iterations})
    return out / "best" if (out / "best").exists() else final


def _save(path: Path, model, opt, iteration: int, best: float, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration, "best": best,
                "seconds": seconds}, tmp)
    tmp.replace(path)  # atomic: a kill during the write leaves the previous checkpoint


def _logged_seconds(log_path: Path) -> float:
    """Training time recorded by validation entries (for checkpoints written before `seconds` existed)."""
    if not log_path.exists():
        return 0.0
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    return float(json.loads(lines[-1]).get("elapsed_s", 0.0)) if lines else 0.0


def training_seconds(run: str | Path) -> float:
    """Total training time of a run folder."""
    last = Path(run) / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if "seconds" in ck:
            return float(ck["seconds"])
    return _logged_seconds(Path(run) / "log.jsonl")

