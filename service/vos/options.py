"""Names the network package accepts, importable without torch (the API validates job options with them)."""

FLOW_NAMES = ("dis", "farneback", "none")
PRESET_NAMES = ("resnet50", "resnet34", "resnet18", "lite", "lite2")
FLOW_ONLY = "flow-only"  # the model name of the no-network baseline
DEFAULT_MODEL = "agss-lite"
BACKEND_NAMES = ("torch", "onnxruntime", "openvino")  # inference backends (service/vos/backends.py)
