"""Renders the kustomizations under deploy/kubernetes the way `kubectl kustomize` does, for the
subset of kustomize they use, so the tests can validate what a cluster would receive without a
kustomize binary.

Supported: `resources` (files and folders holding a kustomization), `configMapGenerator`
(`files` as KEY=PATH or PATH, `literals`), `patches` with a JSON 6902 patch and a target, and
`images`. Any other key fails the render instead of being ignored, so a kustomization that
outgrows this subset fails the tests loudly. One known difference: kustomize appends a content
hash to generated ConfigMap names (and rewrites references to them); this renderer keeps the
plain name, which leaves references consistent within one render.
"""
import copy
import os

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(folder):
    """The objects `kubectl kustomize FOLDER` would print, in resource order."""
    kfile = os.path.join(folder, "kustomization.yaml")
    with open(kfile) as f:
        kustomization = yaml.safe_load(f)
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise ValueError(f"{kfile}: keys this renderer does not implement: {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise ValueError(f"{kfile}: kind is {kustomization.get('kind')!r}, not Kustomization")

    objects = []
    for resource in kustomization.get("resources", []):
        path = os.path.normpath(os.path.join(folder, resource))
        if os.path.isdir(path):
            objects += render(path)
        else:
            objects += load_documents(path)
    for generator in kustomization.get("configMapGenerator", []):
        objects.append(_config_map(folder, generator))
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch, kfile)
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    return objects


def _config_map(folder, generator):
    data = {}
    for entry in generator.get("files", []):
        if "=" in entry:
            key, _, path = entry.partition("=")
        else:
            key, path = os.path.basename(entry), entry
        with open(os.path.join(folder, path)) as f:
            data[key] = f.read()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
            "data": data}


def _matches(obj, target):
    group, _, version = obj["apiVersion"].rpartition("/")
    return (target.get("kind", obj["kind"]) == obj["kind"]
            and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
            and target.get("group", group) == group
            and target.get("version", version) == version)


def _apply_patch(objects, patch, kfile):
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list) or "target" not in patch:
        raise ValueError(f"{kfile}: only JSON 6902 patches with a target are implemented")
    hits = [o for o in objects if _matches(o, patch["target"])]
    if not hits:
        raise ValueError(f"{kfile}: patch target {patch['target']} matches no object")
    for obj in hits:
        for op in operations:
            _json_patch(obj, op)


def _json_patch(obj, op):
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
    parent = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op["op"] == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif op["op"] == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[index]
        else:
            raise ValueError(f"JSON patch op {op['op']!r} not implemented")
    else:
        if op["op"] in ("replace", "remove") and last not in parent:
            raise ValueError(f"JSON patch {op['op']} of missing {op['path']}")
        if op["op"] in ("add", "replace"):
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        else:
            raise ValueError(f"JSON patch op {op['op']!r} not implemented")


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def _set_image(objects, image):
    for obj in objects:
        if obj["kind"] not in POD_TEMPLATE_KINDS:
            continue
        spec = pod_spec(obj)
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, tag = container["image"], None
            if ":" in name.rsplit("/", 1)[-1]:
                name, tag = name.rsplit(":", 1)
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            tag = image.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name
