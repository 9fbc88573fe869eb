"""gRPC stubs generated from proto/ (never edited by hand, never committed).

`make install` generates them; if they are missing or older than the .proto (a fresh checkout, an
edited contract), they are generated here on first import with grpcio-tools.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO = PROTO_DIR / "agss" / "v1" / "segmentation.proto"
GEN = Path(__file__).resolve().parent / "gen"


def generate(out: Path = GEN) -> None:
    from grpc_tools import protoc

    (out / "agss" / "v1").mkdir(parents=True, exist_ok=True)
    for d in (out / "agss", out / "agss" / "v1"):
        (d / "__init__.py").touch()
    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(PROTO)])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {rc})")


def _stale() -> bool:
    pb2 = GEN / "agss" / "v1" / "segmentation_pb2.py"
    return not pb2.exists() or pb2.stat().st_mtime < PROTO.stat().st_mtime


def load():
    """(segmentation_pb2, segmentation_pb2_grpc)"""
    if _stale():
        generate()
    if str(GEN) not in sys.path:
        sys.path.insert(0, str(GEN))  # the generated code imports itself as `agss.v1`
    return (importlib.import_module("agss.v1.segmentation_pb2"),
            importlib.import_module("agss.v1.segmentation_pb2_grpc"))


if __name__ == "__main__":
    generate()
    print(f"generated stubs in {GEN}")
