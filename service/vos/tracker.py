"""Per-video inference: one network pass per frame for all objects, O(1) memory in video length.

The tracker is a state machine over frames. On any frame, masks may be given for any objects:
- an id not seen before starts being tracked there;
- an id already tracked is corrected: its prediction on that frame becomes the given mask, and its
  reference is re-encoded from that frame (it joins the new group, like an object that starts later);
- an empty mask removes the object from that frame on (it comes back only with a new mask).
Objects without a mask on that frame keep their state. Objects that start on the same frame share one
reference encoding (a group), as in the official inference. With `occlusions` (the default), what an
object uncovered as it moved does not inherit its mask (`flow.drop_uncovered`).

Its state (`state_dict`) is everything needed to continue: object ids, groups with their reference
encodings (with a `match` model also the reference's 1/16 features and object masks), the previous
soft masks (kept in float16 precision throughout, so a restored tracker gives exactly the labels of
one that never stopped) and small greyscale image, the event detector, the frame counter.
`Tracker.from_state(model, state)` resumes; `dumps`/`loads` turn it into bytes.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .errors import TrackerInputError
from .events import EventDetector
from .flow import FlowEstimator, carry, make_flow
from .labels import MAX_OBJECTS
from .network import Reference, SegmentationModel, normalize_objects

STATE_FORMAT = "agss-tracker"
STATE_VERSION = 1
Masks = Mapping[int, np.ndarray]  # object id -> (H,W) bool mask at input size; empty removes the object


def network_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Input (H,W) -> network (h,w): long side scaled to `long_side`, both multiples of 32."""
    if long_side < 32 or long_side % 32:
        raise TrackerInputError(f"long side must be a positive multiple of 32, got {long_side}")
    scale = long_side / max(height, width)
    return (max(32, int(round(height * scale / 32)) * 32), max(32, int(round(width * scale / 32)) * 32))


def resize_masks(masks: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Binary masks, each (H,W) -> soft masks (K,h,w) float32 (area-averaged)."""
    h, w = size
    out = np.empty((len(masks), h, w), np.float32)
    for i, m in enumerate(masks):
        out[i] = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out


def masks_from_labels(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Label map (H,W) -> {id: (H,W) bool} for every id present (0 is background)."""
    return {int(i): labels == i for i in np.unique(labels) if i != 0}


@dataclass
class _Group:
    """Objects whose masks were given on the same frame share one reference encoding."""

    ref: Reference
    ids: list[int]


class Tracker:
    """Follows any number of objects through one video, frame by frame.

        tracker = Tracker(model, flow="dis")
        labels = tracker.step(frame_rgb_uint8, new_masks=first_labels)   # (H,W) uint8 object ids
        labels = tracker.step(next_frame)
        tracker.scores, tracker.events                                     # of the last step

    `new_masks` is a label map (H,W) (every id present gets that mask) or {id: (H,W) bool mask}
    (where an empty mask removes the object). Ids are kept as given.
    """

    def __init__(self, model: SegmentationModel, flow: str | FlowEstimator = "dis", long_side: int | None = None,
                 occlusions: bool = True):
        self.model = model
        self.flow = make_flow(flow) if isinstance(flow, str) else flow
        # Uncovered pixels carry no object's warped mask (`flow.drop_uncovered`): a second flow per frame.
        self.occlusions = occlusions
        self.long_side = long_side or model.config.long_side
        network_size(32, 32, self.long_side)  # validates long_side early
        self.ids: list[int] = []  # every object ever given, in order of first appearance
        self._groups: list[_Group] = []
        self._prev_probs: torch.Tensor | None = None  # (K,h,w), K = tracked objects in group order
        self._prev_gray: np.ndarray | None = None
        self._events = EventDetector()
        self.input_size: tuple[int, int] | None = None
        self.net_size: tuple[int, int] | None = None
        self.frames_seen = 0
        self.scores: dict[int, float] = {}  # last step: every id, 0 for objects not tracked there
        self.events: list[dict] = []  # last step
        self.timings: dict[str, float] = {"flow": 0.0, "network": 0.0}  # seconds, last step

    @property
    def tracked(self) -> list[int]:
        """Ids being tracked, in the order of the soft masks (group by group)."""
        return [i for g in self._groups for i in g.ids]

    @property
    def num_objects(self) -> int:
        return len(self.tracked)

    # -- inputs ----------------------------------------------------------------------------------------
    def _check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise TrackerInputError("frame must be an RGB uint8 array of shape (H,W,3)")
        if self.input_size is None:
            self.input_size = frame.shape[:2]
            self.net_size = network_size(*self.input_size, self.long_side)
        elif frame.shape[:2] != self.input_size:
            raise TrackerInputError(f"frame {self.frames_seen} is {frame.shape[1]}x{frame.shape[0]}, earlier frames "
                                    f"were {self.input_size[1]}x{self.input_size[0]}")

    def _prompts(self, new_masks: np.ndarray | Masks | None) -> dict[int, np.ndarray]:
        if new_masks is None:
            return {}
        H, W = self.input_size
        if isinstance(new_masks, np.ndarray):
            if new_masks.shape != (H, W):
                raise TrackerInputError(f"mask is {new_masks.shape[-1]}x{new_masks.shape[0]}, frame is {W}x{H}")
            new_masks = masks_from_labels(new_masks)
        out = {}
        for i, m in sorted(new_masks.items()):
            if not 1 <= int(i) <= MAX_OBJECTS:
                raise TrackerInputError(f"object ids must be 1..{MAX_OBJECTS}, got {i}")
            if not isinstance(m, np.ndarray) or m.ndim != 2:
                raise TrackerInputError(f"the mask of object {i} must be an (H,W) array")
            if m.shape != (H, W):
                raise TrackerInputError(f"mask of object {i} is {m.shape[1]}x{m.shape[0]}, frame is {W}x{H}")
            out[int(i)] = m.astype(bool, copy=False)
        if len(set(self.ids) | {i for i, m in out.items() if m.any()}) > MAX_OBJECTS:
            raise TrackerInputError(f"at most {MAX_OBJECTS} objects can be tracked")
        return out

    # -- one frame ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, frame: np.ndarray, new_masks: np.ndarray | Masks | None = None) -> np.ndarray:
        """frame (H,W,3) uint8 RGB, masks given on this frame -> labels (H,W) uint8."""
        self._check_frame(frame)
        prompts = self._prompts(new_masks)
        h, w = self.net_size
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        image = None

        tracked = self.tracked
        probs = self._prev_probs
        t_flow = t0 = time.perf_counter()
        if tracked:
            image = self.model.preprocess(small)
            backward = self.flow(gray, self._prev_gray)
            forward = self.flow(self._prev_gray, gray) if self.occlusions else None
            t_flow = time.perf_counter()
            warped = carry(probs, backward, forward)
            raw, s = [], 0
            for g in self._groups:
                raw.append(self.model.object_probs(image, warped[s:s + len(g.ids)], g.ref))
                s += len(g.ids)
            probs = normalize_objects(torch.cat(raw))

        given = [i for i, m in prompts.items() if m.any()]
        started = {i for i in given if i not in self.ids}
        corrected = {i for i in given if i in self.ids}
        removed = {i for i, m in prompts.items() if not m.any() and i in tracked}
        if prompts:  # prompted objects leave their groups (and their predictions are dropped)
            keep = [k for k, i in enumerate(tracked) if i not in prompts]
            self._groups = [g for g in (self._without(g, prompts) for g in self._groups) if g.ids]
            probs = probs[keep] if probs is not None and keep else None
            tracked = self.tracked
        # The frame's labels: the predictions of the objects without a prompt, then the given masks, exact at
        # input resolution (a later id wins where given masks overlap).
        labels, small_labels = self._labels(probs, tracked)
        for i in given:
            labels[prompts[i]] = i
        if probs is not None:
            probs = probs.half().float()  # the precision a saved state keeps: a restored tracker matches
        self.scores = self._scores(probs, small_labels, tracked)
        if given:  # the given objects form a new group, encoded on this frame
            image = self.model.preprocess(small) if image is None else image
            soft = torch.from_numpy(resize_masks([prompts[i] for i in given], (h, w))).to(self.model.device)
            self._groups.append(_Group(self.model.encode_reference(image, soft), given))
            # Given masks win over predictions where they overlap.
            probs = soft if probs is None else torch.cat([probs * (1 - soft.max(dim=0).values), soft])
            probs = probs.half().float()
            self.ids += [i for i in given if i not in self.ids]
            self.scores.update(dict.fromkeys(given, 1.0))
        tracked = self.tracked
        areas = np.bincount(labels.ravel(), minlength=MAX_OBJECTS + 2)
        self.events = self._events.update({i: int(areas[i]) for i in tracked}, self.scores, started, corrected,
                                          removed)
        self._prev_probs, self._prev_gray = (probs if tracked else None), gray
        self.frames_seen += 1
        self.timings = {"flow": t_flow - t0, "network": time.perf_counter() - t_flow}
        return labels

    @staticmethod
    def _without(group: _Group, prompts: Masks) -> _Group:
        """The group less its prompted objects, each leaving with its row of the reference."""
        rows = [k for k, i in enumerate(group.ids) if i not in prompts]
        return _Group(group.ref.select(rows), [group.ids[k] for k in rows])

    def _labels(self, probs: torch.Tensor | None, tracked: list[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Soft masks (K,h,w) -> label map (H,W) at input size, and the argmax index map (h,w) at network
        size (0 background, k+1 object k), by the argmax over background and objects.

        Upsampled with OpenCV (bilinear, half-pixel centres, as torch's interpolate without corners) one
        plane at a time, the running maximum kept in place: several times faster than torch's interpolate
        and argmax for this one call (docs/BENCHMARKS.md)."""
        H, W = self.input_size
        if probs is None or not tracked:
            return np.zeros((H, W), np.uint8), None
        small = torch.cat([1 - probs.sum(dim=0, keepdim=True), probs]).cpu().numpy()  # (K+1,h,w)
        best = cv2.resize(small[0], (W, H), interpolation=cv2.INTER_LINEAR)
        idx = np.zeros((H, W), np.uint8)  # K+1 <= MAX_OBJECTS+1 channels fit
        for c in range(1, small.shape[0]):
            up = cv2.resize(small[c], (W, H), interpolation=cv2.INTER_LINEAR)
            np.copyto(idx, np.uint8(c), where=up > best)  # earlier channels win ties, as argmax does
            np.maximum(best, up, out=best)
        lut = np.array([0] + tracked, np.uint8)
        return lut[idx], small.argmax(axis=0)

    def _scores(self, probs: torch.Tensor | None, small_labels: np.ndarray | None,
                tracked: list[int]) -> dict[int, float]:
        """Mean probability inside each predicted object's mask (at network size); 0 when empty or not tracked."""
        scores = dict.fromkeys(self.ids, 0.0)
        if probs is None or small_labels is None:
            return scores
        p = probs.cpu().numpy()  # (K,h,w)
        for k, i in enumerate(tracked):
            inside = small_labels == k + 1
            n = int(np.count_nonzero(inside))
            scores[i] = round(float(p[k][inside].sum(dtype=np.float64)) / n, 4) if n else 0.0
        return scores

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue, as tensors and plain values (CPU), O(objects) in size."""
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "flow": self.flow.name, "long_side": self.long_side,
            "occlusions": self.occlusions,
            "ids": list(self.ids), "frames_seen": self.frames_seen,
            "input_size": list(self.input_size) if self.input_size else None,
            "net_size": list(self.net_size) if self.net_size else None,
            "groups": [{"ids": list(g.ids), "r5": g.ref.r5.detach().cpu(),
                        **({"feats": g.ref.feats.detach().cpu(), "masks": g.ref.masks.detach().cpu()}
                           if g.ref.masks is not None else {})} for g in self._groups],
            "prev_probs": None if self._prev_probs is None else self._prev_probs.detach().half().cpu(),
            "prev_gray": None if self._prev_gray is None else torch.from_numpy(self._prev_gray.copy()),
            "events": self._events.state_dict(),
        }

    @classmethod
    def from_state(cls, model: SegmentationModel, state: dict, flow: str | FlowEstimator | None = None) -> Tracker:
        """A tracker that continues where the one that saved `state` stopped."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise TrackerInputError(f"not a tracker state of version {STATE_VERSION}")
        if getattr(model.config, "match", False) and not all("masks" in g for g in state["groups"]):
            raise TrackerInputError("the tracker state was saved with a model that does not match appearance; "
                                    "it cannot continue with this one")
        # A state saved before occlusions were handled continues as it started.
        t = cls(model, flow=flow or state["flow"], long_side=state["long_side"],
                occlusions=bool(state.get("occlusions", False)))
        dev = model.device
        t.ids = [int(i) for i in state["ids"]]
        t.frames_seen = int(state["frames_seen"])
        t.input_size = tuple(state["input_size"]) if state["input_size"] else None
        t.net_size = tuple(state["net_size"]) if state["net_size"] else None
        t._groups = [_Group(Reference(g["r5"].to(dev), *(g[k].to(dev) if k in g else None for k in ("feats", "masks"))),
                            [int(i) for i in g["ids"]]) for g in state["groups"]]
        t._prev_probs = None if state["prev_probs"] is None else state["prev_probs"].to(dev).float()
        t._prev_gray = None if state["prev_gray"] is None else state["prev_gray"].numpy().copy()
        t._events.load_state_dict(state["events"])
        return t


def dumps(state: dict) -> bytes:
    """A tracker state as bytes (a torch archive of tensors and plain values)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def loads(data: bytes) -> dict:
    """Bytes from `dumps` -> state; loaded with weights_only=True, so it can never run code."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state is one typed error
        raise TrackerInputError(f"unreadable tracker state ({type(e).__name__})") from None
