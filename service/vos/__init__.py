"""AGSS-VOS network and inference: pure PyTorch/NumPy/OpenCV, nothing from the rest of `service`.

Names are imported lazily so that `service.vos.errors` can be used by processes that never load
torch (the API servers map these errors to status codes).
"""

from importlib import import_module

_EXPORTS = {
    "convert_official": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
    "CheckpointError": "errors", "ModelNotFoundError": "errors", "TrackerInputError": "errors",
    "VOSError": "errors", "FLOW_NAMES": "options", "make_flow": "flow", "warp_masks": "flow",
    "AGSSVOS": "network", "PRESETS": "network", "AGSSConfig": "network", "Reference": "network",
    "SegmentationModel": "network", "build_model": "network", "normalize_objects": "network",
    "Tracker": "tracker", "network_size": "tracker", "MAX_OBJECTS": "labels", "DEFAULT_MODEL": "options",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
