"""Build hook: the gRPC stubs are generated from proto/ into service/grpc/pb/ whenever the package is
built (wheel, editable install); grpcio-tools is a build requirement. They are never committed or
edited by hand. Generation runs before setup() because setuptools checks every package folder early."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / "proto"
PB = HERE / "service" / "grpc" / "pb"


def generate_stubs() -> None:
    """protoc -> service/grpc/pb/{name}_pb2.py(i), {name}_pb2_grpc.py, importing each other relatively."""
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={tmp}",
                          f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *map(str, protos)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {PROTO_ROOT} (exit {rc})")
        PB.mkdir(parents=True, exist_ok=True)
        (PB / "__init__.py").write_text('"""Generated from proto/ at build time (setup.py); not committed."""\n')
        for src in Path(tmp).rglob("*.py*"):
            # protoc writes `from agss.v1 import x_pb2`; inside our package the stubs import each other.
            text = re.sub(r"^from agss\.v1 import (\w+)", r"from . import \1", src.read_text(), flags=re.M)
            (PB / src.name).write_text(text)
    for proto in protos:  # shipped beside the stubs, so that users can generate clients in other languages
        shutil.copy(proto, PB / proto.name)


if PROTO_ROOT.is_dir():  # an sdist unpacked without proto/ keeps the stubs it was built with
    generate_stubs()
setup(packages=find_packages(include=["service", "service.*"]))
