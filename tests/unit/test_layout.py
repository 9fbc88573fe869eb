"""The rules of the layout (README "Layout", DESIGN section 4), checked on the code itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

SERVICE = ROOT / "service"


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (SERVICE / package).rglob("*.py") if "pb" not in p.relative_to(SERVICE).parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the service modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _service_imports(path: Path) -> set[str]:
    return {m for m in _imports(path) if m == "service" or m.startswith("service.")}


@pytest.mark.parametrize("path", _modules("vos"), ids=lambda p: p.name)
def test_vos_imports_nothing_from_the_rest_of_service(path):
    outside = {m for m in _service_imports(path) if not m.startswith("service.vos")}
    assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


@pytest.mark.parametrize("path", _modules("media"), ids=lambda p: p.name)
def test_media_imports_only_media_and_label_rules(path):
    outside = {m for m in _service_imports(path) if not m.startswith(("service.media", "service.vos.labels"))}
    assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


@pytest.mark.parametrize("package", ["api", "grpc", "jobs", "client"])
def test_servers_and_clients_never_import_torch_statically(package):
    for path in _modules(package):
        names = _imports(path)
        assert not any(n == "torch" or n.startswith("torch.") for n in names), path
        heavy = {m for m in _service_imports(path) if m.startswith(("service.worker", "service.training",
                                                                     "service.vos.network", "service.vos.tracker"))}
        assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)}"


def test_importing_the_api_and_grpc_servers_loads_no_torch():
    code = ("import sys, service.api.app, service.grpc.server, service.client, service.jobs.intake;"
            "bad = [m for m in ('torch', 'service.worker', 'service.vos.network') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_only_the_runtime_starts_processes_and_nothing_finds_files_above_the_package():
    for path in sorted(SERVICE.rglob("*.py")):
        if "pb" in path.relative_to(SERVICE).parts:
            continue
        src = path.read_text()
        rel = path.relative_to(SERVICE).as_posix()
        if "subprocess.Popen" in src or "subprocess.run" in src:
            assert rel in ("runtime/supervisor.py", "runtime/redis.py"), rel
        assert "parents[" not in src, f"{rel} locates files relative to the checkout"


def test_generated_stubs_are_not_committed():
    tracked = subprocess.run(["git", "ls-files", "service/grpc"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "_pb2" not in tracked
    assert "service/grpc/pb/" in (ROOT / ".gitignore").read_text()
