"""Reading the deployment files as the tools do: compose YAML tags, kustomize rendering."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class ComposeLoader(yaml.SafeLoader):
    """YAML with the Compose specification's merge-control tags (!reset, !override)."""


class _Reset:
    """A value tagged !reset: Compose removes the key from the merged file."""

    def __repr__(self) -> str:
        return "!reset"


RESET = _Reset()
ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
ComposeLoader.add_constructor(
    "!override", lambda loader, node: loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
    else loader.construct_mapping(node))


def _strip_reset(value):
    if isinstance(value, dict):
        return {k: _strip_reset(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [_strip_reset(v) for v in value if v is not RESET]
    return value


def load_compose(name: str, keep_reset: bool = False) -> dict:
    """A compose file as the schema sees it (keys tagged !reset removed, unless keep_reset)."""
    doc = yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)
    return doc if keep_reset else _strip_reset(doc)


_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR:-default} substitution, recursively."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


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
