"""Inference backends: where the network's per-frame calls run.

    model = wrap(load_model("agss-lite"), "openvino")   # or "onnxruntime", or "torch" (eager)
    tracker = Tracker(model)                             # unchanged: the wrapper is a SegmentationModel

"torch" is the network itself. The compiled CPU runtimes run the graphs of service/vos/export.py
(the same submodules, K, H and W free), exported once when the model is wrapped, and give the same
probabilities within 1e-3 (tests/unit/test_backends.py). Weights stay in memory; nothing is written
anywhere but a temporary file that OpenVINO reads and that is deleted at once.

Which one is fastest depends on the machine: `PREFERENCE` is the order measured on ours (2-core AVX2
CPU, docs/BENCHMARKS.md), and `default_backend()` picks the first one installed.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .errors import BackendError
from .export import onnx_bytes
from .network import AGSSVOS, Reference, SegmentationModel, _check_sizes, normalize_objects, reference_masks
from .options import BACKEND_NAMES

# Fastest first on our CPU (bench tracker, 3 objects): OpenVINO, then ONNX Runtime, then eager.
PREFERENCE = ("openvino", "onnxruntime", "torch")
assert sorted(PREFERENCE) == sorted(BACKEND_NAMES)
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # backend -> the package it needs
# Compiled shapes kept per model (OpenVINO compiles per input shape): a video has one size, and a
# worker sees a few, so a small bound keeps memory flat without recompiling in steady state.
MAX_COMPILED = 8

__all__ = ["BACKEND_NAMES", "PREFERENCE", "CompiledModel", "available_backends", "default_backend", "resolve_backend",
           "wrap"]


def installed(backend: str) -> bool:
    """Whether the runtime a backend needs can be imported (without importing it)."""
    _check_name(backend)
    mod = _MODULES.get(backend)
    return mod is None or importlib.util.find_spec(mod) is not None


def available_backends() -> tuple[str, ...]:
    """The backends that can run here, fastest first."""
    return tuple(b for b in PREFERENCE if installed(b))


def default_backend(device: str | torch.device = "cpu") -> str:
    """The fastest backend installed for `device`: the compiled runtimes are CPU-only."""
    if torch.device(device).type != "cpu":
        return "torch"
    return available_backends()[0]


def resolve_backend(name: str, device: str | torch.device = "cpu") -> str:
    """A backend name as asked for ("auto" included: Settings.backend's default) -> the backend that runs."""
    return default_backend(device) if name == "auto" else name


def wrap(model: SegmentationModel, backend: str, threads: int | None = None) -> SegmentationModel:
    """The model with its per-frame calls on `backend`; "torch" gives the model itself.

    A model that is not the AGSS-VOS network (the flow-only baseline) has nothing to compile and
    comes back as it is. `threads` defaults to torch.get_num_threads(), so that a worker's thread
    setting holds for every backend. Raises BackendError for an unknown or uninstalled backend, or a
    compiled backend asked to run a model that is not on the CPU.
    """
    _check_name(backend)
    if backend == "torch" or not isinstance(model, AGSSVOS):
        return model
    if not installed(backend):
        raise BackendError(f"backend {backend!r} needs the {_MODULES[backend]!r} package, which is not installed "
                           f"(pip install {_MODULES[backend]}); installed: {', '.join(available_backends())}")
    if model.device.type != "cpu":
        raise BackendError(f"backend {backend!r} runs on the CPU; the model is on {model.device} "
                           "(use the torch backend there)")
    cls = {"onnxruntime": OnnxRuntimeModel, "openvino": OpenVINOModel}[backend]
    return cls(model, threads or torch.get_num_threads())


def _check_name(backend: str) -> None:
    if backend not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")


class CompiledModel:
    """A SegmentationModel whose encode_reference and object_probs run in a compiled runtime.

    Inputs and outputs are CPU torch tensors, as with the eager network, so the Tracker, its state
    and the training loop's `evaluate` take it unchanged; `model` is the eager network it came from.
    """

    backend = ""

    def __init__(self, model: AGSSVOS, threads: int):
        self.model = model.eval()
        self.threads = threads
        self.training = False

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> CompiledModel:
        return self

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(H,W,3) uint8 RGB -> (1,3,H,W) float32, exactly as the eager network does it."""
        return self.model.preprocess(rgb)

    def encode_reference(self, image0: torch.Tensor, masks0: torch.Tensor) -> Reference:
        """image0 (1,3,H,W), masks0 (K,H,W) in [0,1] -> Reference with r5 (1,C5,H/32,W/32) (and, for a
        `match` model, feats and masks, as the eager network's)."""
        _check_sizes(image0, masks0)
        masks = _numpy(masks0) if masks0.shape[0] else np.zeros((1, *masks0.shape[1:]), np.float32)
        outs = [torch.from_numpy(o) for o in self._reference(_numpy(image0), masks)]
        return Reference(*outs, reference_masks(masks0)) if self.config.match else Reference(outs[0])

    def object_probs(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        """(1,3,H,W), (K,H,W), Reference -> per-object foreground probabilities (K,H,W), not normalised."""
        _check_sizes(image, warped_prev)
        if warped_prev.shape[0] == 0:
            return warped_prev
        feeds = {"image": _numpy(image), "warped": _numpy(warped_prev), "ref_r5": _numpy(ref.r5)}
        if self.config.match:
            feeds.update(ref_feats=_numpy(ref.feats), ref_masks=_numpy(ref.masks))
        return torch.from_numpy(self._object_probs(feeds))

    def __call__(self, image: torch.Tensor, warped_prev: torch.Tensor, ref: Reference) -> torch.Tensor:
        """As `AGSSVOS.forward`: probabilities (K,H,W) normalised across the objects."""
        return normalize_objects(self.object_probs(image, warped_prev, ref))

    forward = __call__

    def _reference(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        """The reference graph's outputs: ref_r5 (and ref_feats for a `match` model)."""
        raise NotImplementedError

    def _object_probs(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The step graph's object_probs for its inputs by name."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.backbone}, {self.threads} threads)"


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous view (no copy for the tensors the tracker passes)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


class OnnxRuntimeModel(CompiledModel):
    """ONNX Runtime, CPU execution provider: two sessions with dynamic K, H, W, built once."""

    backend = "onnxruntime"

    def __init__(self, model: AGSSVOS, threads: int):
        super().__init__(model, threads)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # its notes about shape inference on dynamic axes are not ours to act on

        def session(part: str):
            return ort.InferenceSession(onnx_bytes(model, part), opts, providers=["CPUExecutionProvider"])

        self._ref, self._step = session("reference"), session("step")

    def _reference(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        return self._ref.run(None, {"image": image, "masks": masks})

    def _object_probs(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._step.run(None, feeds)[0]


class OpenVINOModel(CompiledModel):
    """OpenVINO on the CPU. It is faster with static shapes than dynamic ones (0.165 vs 0.21 s for the
    3-object step), so each graph is compiled lazily for the shapes it meets, (K,H,W) for the step
    and (H,W) for the reference (a fraction of a second each), and kept (LRU, MAX_COMPILED)."""

    backend = "openvino"

    def __init__(self, model: AGSSVOS, threads: int):
        super().__init__(model, threads)
        import openvino as ov

        self._core = ov.Core()
        self._props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
                       "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}
        self._graphs = {part: self._read(onnx_bytes(model, part)) for part in ("reference", "step")}
        self._compiled: OrderedDict[tuple, object] = OrderedDict()  # shapes -> infer request
        self._lock = threading.Lock()  # an infer request serves one call at a time

    def _read(self, data: bytes):
        # read_model takes ONNX by path; the file lives only as long as the read.
        with tempfile.TemporaryDirectory(prefix="agss-ov-") as d:
            path = Path(d) / "part.onnx"
            path.write_bytes(data)
            return self._core.read_model(os.fspath(path))

    def _run(self, part: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            return self._run_locked(part, feeds)

    def _run_locked(self, part: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        key = (part, *((k, v.shape) for k, v in feeds.items()))
        request = self._compiled.get(key)
        if request is None:
            graph = self._graphs[part].clone()
            graph.reshape({k: list(v.shape) for k, v in feeds.items()})
            request = self._core.compile_model(graph, "CPU", self._props).create_infer_request()
            self._compiled[key] = request
            if len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        out = request.infer(feeds)
        # The request reuses its output buffers on the next call: copy what is kept.
        return [np.array(out[i], copy=True) for i in range(len(out))]

    def _reference(self, image: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
        # Merged outside the graph (as the graph would) so that one compiled shape serves any K.
        return self._run("reference", {"image": image, "masks": masks.max(axis=0, keepdims=True)})

    def _object_probs(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # All K objects in one call, compiled for this K: measured faster than a frame graph plus one
        # object graph per object (0.095 vs 0.128 s with 1 object, 0.170 vs 0.184 s with 3), whose
        # hand-over of the stem features costs more than the cache effects that favour chunks in eager.
        return self._run("step", feeds)[0]
