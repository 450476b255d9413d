#!/usr/bin/env python3
"""Render a kustomization of deploy/kustomize without the kustomize binary.

    python3 deploy/kustomize/render.py deploy/kustomize/overlays/native-sidecar > rendered.yaml
    python3 deploy/kustomize/render.py --volumes /tmp/pod deploy/kustomize/overlays/native-sidecar
        # and then: graphguard check /tmp/pod/etc/graphguard/policies

`kubectl kustomize DIR` (or `kustomize build DIR`) gives the same objects; this renderer exists
so that the manifests can be rendered and tested where only Python and PyYAML are installed
(tests/deploy/test_manifests.py compares the two whenever kubectl is present).

It implements the subset of kustomize these manifests use, and refuses anything else rather
than ignoring it: `resources` (files and directories), `components`, `images`, and `patches`
(inline or from a file; RFC 6902 JSON patches with a target, or strategic-merge patches with the
Kubernetes merge keys of pod specs). Objects come out in kustomize's default ("legacy") order.

--volumes DIR writes the ConfigMap and Secret volumes that graphguard mounts under DIR at their
mount paths (plain files), so that a policy change can be checked before it is applied.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KNOWN_KEYS = {"apiVersion", "kind", "resources", "components", "images", "patches"}

# kustomize's legacy order (api/resource/resource.go, gvk ordering): these kinds first, in this
# order, then everything else by group, version and kind; the webhook configurations last.
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
    "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

# Strategic-merge keys for the lists that appear in pod specs.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class RenderError(Exception):
    pass


def _load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _kustomization_file(d: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        if (d / name).is_file():
            return d / name
    raise RenderError(f"{d}: no kustomization file")


def _gvk(obj: dict) -> tuple[str, str, str]:
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    return group, version, obj.get("kind", "")


def _id(obj: dict) -> tuple:
    return (_gvk(obj), obj.get("metadata", {}).get("namespace"), obj.get("metadata", {}).get("name"))


# --- JSON patch (RFC 6902) -------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            if p not in doc:
                raise RenderError(f"path segment {p!r} not found")
            doc = doc[p]
        else:
            raise RenderError(f"cannot descend into {type(doc).__name__} at {p!r}")
    return doc


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, _pointer(path))


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    parent = _walk(doc, parts[:-1])
    key = parts[-1]
    if isinstance(parent, list):
        return parent.pop(int(key))
    if key not in parent:
        raise RenderError(f"remove: {path} does not exist")
    return parent.pop(key)


def _add(doc: Any, path: str, value: Any) -> None:
    parts = _pointer(path)
    parent = _walk(doc, parts[:-1])
    key = parts[-1]
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            i = int(key)
            if not 0 <= i <= len(parent):
                raise RenderError(f"add: index {i} out of range at {path}")
            parent.insert(i, value)
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        raise RenderError(f"add: cannot add into {type(parent).__name__} at {path}")


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        kind = op.get("op")
        path = op.get("path", "")
        if kind == "add":
            _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _remove(doc, path)
            _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "move":
            _add(doc, path, _remove(doc, op["from"]))
        elif kind == "copy":
            _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise RenderError(f"test failed at {path}: {_get(doc, path)!r} != {op.get('value')!r}")
        else:
            raise RenderError(f"unknown JSON patch op {kind!r}")
    return doc


# --- strategic merge patch (the subset pod specs need) ---------------------------------------

def _smp(base: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if k.startswith("$"):
                raise RenderError(f"unsupported strategic-merge directive {k!r}")
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _smp(out[k], v, k)
            else:
                out[k] = _strip_directives(copy.deepcopy(v))
        return out
    if isinstance(patch, list) and isinstance(base, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(f"{field}: patch items need {key!r}")
            idx = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    out.pop(idx)
            elif idx is None:
                out.append(_strip_directives(copy.deepcopy(item)))
            else:
                out[idx] = _smp(out[idx], item, None)
        return out
    return _strip_directives(copy.deepcopy(patch))


def _strip_directives(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items() if not k.startswith("$")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


# --- images ----------------------------------------------------------------------------------

def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, digest = (image.split("@", 1) + [None])[:2] if "@" in image else (image, None)
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest


def _pod_specs(obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    tmpl = (spec.get("template") or {}).get("spec")
    return [tmpl] if isinstance(tmpl, dict) else []


def apply_images(objs: list[dict], images: list[dict]) -> None:
    for obj in objs:
        for ps in _pod_specs(obj):
            for field in ("initContainers", "containers", "ephemeralContainers"):
                for c in ps.get(field) or []:
                    name, tag, digest = _split_image(c.get("image", ""))
                    for rule in images:
                        unknown = set(rule) - {"name", "newName", "newTag", "digest"}
                        if unknown:
                            raise RenderError(f"images: unsupported keys {sorted(unknown)}")
                        if rule["name"] != name:
                            continue
                        new = rule.get("newName", name)
                        if "digest" in rule:
                            c["image"] = f"{new}@{rule['digest']}"
                        elif "newTag" in rule:
                            c["image"] = f"{new}:{rule['newTag']}"
                        else:
                            c["image"] = new + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
                        break


# --- patches ---------------------------------------------------------------------------------

def _matches(obj: dict, target: dict) -> bool:
    group, version, kind = _gvk(obj)
    unknown = set(target) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise RenderError(f"patch target: unsupported selectors {sorted(unknown)}")
    md = obj.get("metadata", {})
    return (
        target.get("group", group) == group
        and target.get("version", version) == version
        and target.get("kind", kind) == kind
        and target.get("name", md.get("name")) == md.get("name")
        and target.get("namespace", md.get("namespace")) == md.get("namespace")
    )


def apply_patches(objs: list[dict], patches: list[dict], root: Path) -> list[dict]:
    for p in patches:
        unknown = set(p) - {"path", "patch", "target"}
        if unknown:
            raise RenderError(f"patches: unsupported keys {sorted(unknown)}")
        if "path" in p:
            text = (root / p["path"]).read_text()
        else:
            text = p["patch"]
        body = yaml.safe_load(text)
        target = p.get("target")
        if isinstance(body, list):
            if not target:
                raise RenderError("a JSON 6902 patch needs a target")
            hits = [i for i, o in enumerate(objs) if _matches(o, target)]
            if not hits:
                raise RenderError(f"patch target {target} matches nothing")
            for i in hits:
                objs[i] = apply_json_patch(objs[i], body)
        elif isinstance(body, dict):
            sel = target or {
                "kind": body.get("kind"),
                "name": body.get("metadata", {}).get("name"),
            }
            hits = [i for i, o in enumerate(objs) if _matches(o, sel)]
            if not hits:
                raise RenderError(f"patch target {sel} matches nothing")
            for i in hits:
                merged = _smp(objs[i], body)
                if target:  # a targeted patch's own identity does not rename the object
                    merged["metadata"]["name"] = objs[i]["metadata"]["name"]
                    merged["kind"] = objs[i]["kind"]
                    merged["apiVersion"] = objs[i]["apiVersion"]
                objs[i] = merged
        else:
            raise RenderError("a patch is a JSON 6902 list or a strategic-merge object")
    return objs


# --- kustomizations --------------------------------------------------------------------------

def _accumulate(d: Path, expect_kind: str, objs: list[dict]) -> list[dict]:
    kfile = _kustomization_file(d)
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{kfile}: unsupported kustomization fields {sorted(unknown)}")
    kind = k.get("kind", "Kustomization")
    if kind != expect_kind:
        raise RenderError(f"{kfile}: kind {kind}, expected {expect_kind}")
    for r in k.get("resources") or []:
        p = (d / r).resolve()
        if p.is_dir():
            objs.extend(_accumulate(p, "Kustomization", []))
        elif p.is_file():
            objs.extend(_load_docs(p))
        else:
            raise RenderError(f"{kfile}: resource {r} not found")
    seen = set()
    for o in objs:
        if _id(o) in seen:
            raise RenderError(f"{kfile}: duplicate object {_id(o)}")
        seen.add(_id(o))
    for c in k.get("components") or []:
        objs = _accumulate((d / c).resolve(), "Component", objs)
    objs = apply_patches(objs, k.get("patches") or [], d)
    apply_images(objs, k.get("images") or [])
    return objs


def _order(obj: dict) -> tuple:
    kind = obj.get("kind", "")
    if kind in ORDER_FIRST:
        rank = (0, ORDER_FIRST.index(kind), "")
    elif kind in ORDER_LAST:
        rank = (2, ORDER_LAST.index(kind), "")
    else:
        # kustomize's Gvk.String(): group_version_kind, "~G"/"~V" for an empty group/version.
        group, version, _ = _gvk(obj)
        rank = (1, 0, f"{group or '~G'}_{version or '~V'}_{kind or '~K'}")
    md = obj.get("metadata", {})
    return rank + (md.get("namespace") or "", md.get("name") or "")


def render(directory: str | Path) -> list[dict]:
    """The objects of the kustomization in `directory`, in kustomize's default order."""
    objs = _accumulate(Path(directory).resolve(), "Kustomization", [])
    return sorted(objs, key=_order)


def write_volumes(objs: list[dict], root: Path, container: str = "graphguard") -> list[Path]:
    """Write the ConfigMap and Secret volumes mounted by `container` under `root`."""
    import base64

    written = []
    for obj in objs:
        for ps in _pod_specs(obj):
            vols = {v["name"]: v for v in ps.get("volumes") or []}
            for c in (ps.get("initContainers") or []) + (ps.get("containers") or []):
                if c.get("name") != container:
                    continue
                for m in c.get("volumeMounts") or []:
                    v = vols.get(m["name"], {})
                    kind, name = (("ConfigMap", v["configMap"]["name"]) if "configMap" in v else
                                  ("Secret", v["secret"]["secretName"]) if "secret" in v else (None, None))
                    if not kind:
                        continue
                    src = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
                    files = {k: base64.b64decode(x).decode() for k, x in (src.get("binaryData") or {}).items()}
                    if kind == "Secret":
                        files.update({k: base64.b64decode(x).decode() for k, x in (src.get("data") or {}).items()})
                        files.update(src.get("stringData") or {})
                    else:
                        files.update(src.get("data") or {})
                    d = root / m["mountPath"].lstrip("/")
                    d.mkdir(parents=True, exist_ok=True)
                    for k, text in files.items():
                        (d / k).write_text(text)
                    written.append(d)
    return written


def main(argv: list[str]) -> int:
    args = argv[1:]
    volumes = None
    if len(args) == 3 and args[0] == "--volumes":
        volumes, args = Path(args[1]), args[2:]
    if len(args) != 1:
        print("usage: render.py [--volumes DIR] KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    try:
        objs = render(args[0])
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    if volumes:
        for d in write_volumes(objs, volumes):
            print(d)
        return 0
    sys.stdout.write(yaml.dump_all(objs, Dumper=_BlockDumper, sort_keys=True, default_flow_style=False))
    return 0


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (policy files in ConfigMaps) as literal blocks, as kustomize does."""


_BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
