"""Checks deploy/ without a cluster or a container engine: every Kubernetes object is validated
against Kubernetes' own schemas (kubernetes-validate, offline) or the GAIE CRDs'
openAPIV3Schema (jsonschema); the server's command lines in the manifests and the Dockerfiles
name only flags that the built binary's `serve --help` lists, and agree with the probes, ports
and volumes around them; the endpoint picker's config turns LoRA affinity on; hadolint and
yamllint pass. scripts/build_image.sh is the check that really builds and runs the image.
"""
import functools
import json
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, loraserve_bin

sys.path.insert(0, os.path.dirname(__file__))
import kustomize_lite  # noqa: E402

K8S = os.path.join(ROOT, "deploy", "kubernetes")
DOCKERFILES = ["deploy/Dockerfile.cpu", "deploy/Dockerfile.cuda"]
# The oldest Kubernetes the manifests support: preStop `sleep` handlers are on by default
# from 1.30 (gRPC probes are GA since 1.27).
K8S_VERSION = "1.30"
KUSTOMIZATIONS = ["base", "cuda", "gaie", "gaie/crds"]
SERVER_RENDERS = ["base", "cuda"]
GAIE_GROUPS = {"inference.networking.k8s.io", "inference.networking.x-k8s.io"}
# Kinds whose schemas live in CRDs nobody ships offline (Gateway API); checked by hand below.
GATEWAY_API_KINDS = {("gateway.networking.k8s.io/v1", "HTTPRoute")}
VENV_BIN = os.path.dirname(sys.executable)


@functools.cache
def rendered(name):
    return kustomize_lite.render(os.path.join(K8S, name))


def find(objects, kind, name=None):
    hits = [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]
    assert hits, f"no {kind} {name or ''} in the render"
    return hits[0] if name is not None or len(hits) == 1 else hits


def server(render):
    """The loraserve workload of a render and its one container."""
    workload = find(rendered(render), "StatefulSet", "loraserve")
    containers = kustomize_lite.pod_spec(workload)["containers"]
    assert len(containers) == 1
    return workload, containers[0]


# --- `loraserve serve` flags -----------------------------------------------------------------

@functools.cache
def serve_flags():
    """{flag: takes_a_value} for every option that `loraserve serve --help` lists."""
    proc = subprocess.run([loraserve_bin(), "serve", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    flags = {}
    for match in re.finditer(r"^\s+(?:-\w,)?(--[a-z0-9][a-z0-9-]*)(\S*)(?:\s+(\S+))?",
                             proc.stdout, re.M):
        # CLI11 prints a type word (TEXT, INT, ...) after an option that takes a value, and
        # the description, or nothing, after a plain flag.
        flags[match.group(1)] = bool(match.group(3) and re.match(
            r"(TEXT|INT|UINT|FLOAT|DOUBLE|NUMBER|BOOLEAN|ENUM)\b", match.group(3)))
    assert "--model" in flags and flags["--model"], proc.stdout
    return flags


def parse_args(args):
    """[(flag, value or None)] from a serve command line, in both --flag=value and --flag value
    forms (a word after a flag is its value; a flag followed by a flag, or last, has none);
    fails on a stray word or a flag given twice (CLI11 rejects that). Which flags exist is
    checked separately, against the binary (check_flags_exist)."""
    out, i = [], 0
    while i < len(args):
        word = args[i]
        assert word.startswith("--"), f"{word!r} is not a flag (in {args})"
        flag, eq, value = word.partition("=")
        if not eq:
            value = None
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
        out.append((flag, value))
        i += 1
    names = [f for f, _ in out]
    assert len(names) == len(set(names)), f"a flag is given twice (CLI11 rejects that): {names}"
    return out


def check_flags_exist(pairs):
    """Every flag is one that the built binary's `serve --help` lists, with a value exactly
    when it takes one."""
    known = serve_flags()
    for flag, value in pairs:
        assert flag in known, (f"{flag} is not an option of `loraserve serve` "
                               f"(its --help lists {sorted(known)})")
        assert known[flag] == (value is not None), (
            f"{flag} {'needs a value' if known[flag] else 'takes no value'}")


def listen_port(address):
    host, _, port = address.rpartition(":")
    assert host and port.isdigit(), address
    return host, int(port)


# --- Dockerfiles -----------------------------------------------------------------------------

def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with comments dropped and continuation lines joined."""
    out, current = [], ""
    with open(os.path.join(ROOT, path)) as f:
        for line in f:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if current and stripped.startswith("#"):
                continue
            current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\")
            if not stripped.endswith("\\"):
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
                current = ""
    return out


def dockerfile_final_stage(path):
    instructions = dockerfile_instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_entrypoint(path):
    stage = dockerfile_final_stage(path)
    entry = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest in stage if word == "CMD"]
    assert len(entry) == 1, f"{path}: one exec-form ENTRYPOINT expected"
    return entry[0] + (cmd[-1] if cmd else [])


# --- rendering and schemas -------------------------------------------------------------------

@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_every_resource_it_lists(name):
    objects = rendered(name)
    assert objects
    keys = [(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in {name}: {keys}"


def test_renders_hold_the_objects_issue_13_asks_for():
    kinds = {o["kind"] for o in rendered("base")}
    assert {"StatefulSet", "Service", "Secret", "PodDisruptionBudget",
            "HorizontalPodAutoscaler"} <= kinds
    workload, _ = server("base")
    assert workload["spec"]["volumeClaimTemplates"], "the store needs a PersistentVolumeClaim"
    gaie = {o["kind"] for o in rendered("gaie")}
    assert {"InferencePool", "InferenceObjective", "InferenceModelRewrite", "HTTPRoute",
            "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding",
            "ConfigMap"} <= gaie
    crds = {o["spec"]["names"]["kind"] for o in rendered("gaie/crds")}
    assert crds == {"InferencePool", "InferenceObjective", "InferenceModelRewrite"}


def core_objects():
    for name in KUSTOMIZATIONS:
        for obj in rendered(name):
            group = obj["apiVersion"].rpartition("/")[0]
            if group in GAIE_GROUPS or (obj["apiVersion"], obj["kind"]) in GATEWAY_API_KINDS:
                continue
            yield name, obj


def test_core_objects_match_kubernetes_schemas():
    checked = 0
    for name, obj in core_objects():
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']}: {e}")
        checked += 1
    assert checked >= 15


def test_kubernetes_schema_check_is_strict():
    # A misspelt field must fail, or the test above proves nothing about typos.
    workload, _ = server("base")
    bad = json.loads(json.dumps(workload))
    kustomize_lite.pod_spec(bad)["containers"][0]["readinessprobe"] = {"periodSeconds": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@functools.cache
def crd_schemas():
    """{(apiVersion, kind): openAPIV3Schema} for each served version of the GAIE CRDs."""
    schemas = {}
    for crd in rendered("gaie/crds"):
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate_against_crd(obj):
    key = (obj["apiVersion"], obj["kind"])
    assert key in crd_schemas(), f"{key} is served by none of the GAIE v1.5.0 CRDs"
    # openAPIV3Schema is a JSON Schema subset; the x-kubernetes-* extensions (CEL rules,
    # list-map keys) are not checked here.
    jsonschema.validate(obj, crd_schemas()[key], cls=jsonschema.Draft7Validator)


def test_gaie_objects_match_the_crds():
    gaie = [o for o in rendered("gaie") if o["apiVersion"].rpartition("/")[0] in GAIE_GROUPS]
    assert {o["kind"] for o in gaie} == {"InferencePool", "InferenceObjective",
                                          "InferenceModelRewrite"}
    for obj in gaie:
        validate_against_crd(obj)


def test_crd_check_rejects_a_malformed_pool():
    pool = json.loads(json.dumps(find(rendered("gaie"), "InferencePool", "lora-pool")))
    pool["spec"]["targetPorts"] = [{"number": "8000"}]
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd(pool)
    pool["spec"]["targetPorts"] = [{"number": 8000}]
    pool["spec"]["endpointPickerRef"]["failureMode"] = "FailSometimes"
    with pytest.raises(jsonschema.ValidationError):
        validate_against_crd(pool)


# --- the server's command line, probes, ports, volumes ---------------------------------------

@pytest.mark.parametrize("render", SERVER_RENDERS)
def test_manifest_args_are_real_serve_flags(render):
    _, container = server(render)
    assert container["command"] == ["loraserve", "serve"]
    pairs = parse_args(container["args"])
    check_flags_exist(pairs)
    args = dict(pairs)
    assert args["--model"] == "/models/smollm2"
    assert args["--log-format"] == "json"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_entrypoint_names_only_real_serve_flags(path):
    entry = dockerfile_entrypoint(path)
    assert entry[:2] == ["loraserve", "serve"], entry
    check_flags_exist(parse_args(entry[2:]))


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_entrypoint_matches_the_image_layout(path):
    entry = dockerfile_entrypoint(path)
    args = dict(parse_args(entry[2:]))
    stage = dockerfile_final_stage(path)
    copies = [rest.split()[-1] for word, rest in stage if word == "COPY"]
    for flag in ("--model", "--adapter-dir"):
        assert args[flag] in copies, f"{path}: {flag} {args[flag]} is not copied into the image"
    volumes = [v for word, rest in stage if word == "VOLUME" for v in json.loads(rest)]
    assert args["--store"] in volumes
    exposed = {int(p) for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    ports = {listen_port(args[f])[1] for f in ("--http-listen", "--listen")}
    assert ports == exposed, f"{path}: EXPOSE {exposed} but the server listens on {ports}"
    assert all(listen_port(args[f])[0] == "0.0.0.0" for f in ("--http-listen", "--listen"))
    assert args["--metrics-listen"] == "", "metrics belong on the HTTP port in the image"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_dockerfile_runs_as_uid_10001_with_bounded_openmp_spinning(path):
    stage = dockerfile_final_stage(path)
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    envs = " ".join(rest for word, rest in stage if word == "ENV")
    # The same threading policy as scripts/serve.sh: a bounded spin, never OMP_WAIT_POLICY=ACTIVE.
    assert "GOMP_SPINCOUNT=100000" in envs
    assert "OMP_WAIT_POLICY=ACTIVE" not in envs


def container_port(container, port):
    """The containerPort a probe's port (a number or a port name) refers to."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in container["ports"]], port
        return port
    named = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert named, f"no container port named {port}"
    return named[0]


@pytest.mark.parametrize("render", SERVER_RENDERS)
def test_probes_and_ports_match_the_listen_flags(render):
    workload, container = server(render)
    args = dict(parse_args(container["args"]))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}
    http_host, http_port = listen_port(args["--http-listen"])
    grpc_host, grpc_port = listen_port(args["--listen"])
    assert (http_host, grpc_host) == ("0.0.0.0", "0.0.0.0"), "the kubelet probes the pod IP"
    assert (http_port, grpc_port) == (ports["http"], ports["grpc"])
    assert args["--metrics-listen"] == "", "the endpoint picker scrapes /metrics on the HTTP port"

    startup, readiness = container["startupProbe"], container["readinessProbe"]
    for probe in (startup, readiness):
        assert probe["httpGet"]["path"] == "/health"
        assert container_port(container, probe["httpGet"]["port"]) == http_port
        assert probe["periodSeconds"] == 1
    assert startup["failureThreshold"] == 600, "weight loading may take up to 10 minutes"
    assert readiness["failureThreshold"] == 1
    liveness = container["livenessProbe"]
    if "grpc" in liveness:
        assert liveness["grpc"]["port"] == grpc_port
        assert liveness["grpc"]["service"] == "liveness"
    else:
        assert liveness["httpGet"]["path"] == "/health"
        assert container_port(container, liveness["httpGet"]["port"]) == http_port

    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == http_port
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("render", SERVER_RENDERS)
def test_grace_period_outlasts_prestop_and_drain(render):
    workload, container = server(render)
    args = dict(parse_args(container["args"]))
    drain = float(args["--drain-seconds"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = kustomize_lite.pod_spec(workload)["terminationGracePeriodSeconds"]
    assert pre_stop > 0
    assert grace > drain + pre_stop, f"grace {grace} <= drain {drain} + preStop {pre_stop}"


@pytest.mark.parametrize("render", SERVER_RENDERS)
def test_store_is_a_persistent_volume_where_store_points(render):
    workload, container = server(render)
    args = dict(parse_args(container["args"]))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert args["--store"] in mounts, f"nothing is mounted at --store {args['--store']}"
    claims = [c["metadata"]["name"] for c in workload["spec"]["volumeClaimTemplates"]]
    assert mounts[args["--store"]] in claims, "the store must be on a PersistentVolumeClaim"
    security = kustomize_lite.pod_spec(workload)["securityContext"]
    # The image's user (see the Dockerfile test) must own the volume and must be the pod's.
    assert security["runAsUser"] == security["fsGroup"] == 10001
    assert security["runAsNonRoot"] is True


@pytest.mark.parametrize("render", SERVER_RENDERS)
def test_pod_labels_env_and_tokens(render):
    workload, container = server(render)
    template = workload["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert labels["app"] == "lora-pool"
    assert labels["inference.networking.k8s.io/engine-type"] == "vllm"
    assert kustomize_lite.pod_spec(workload)["enableServiceLinks"] is False
    secret = find(rendered(render), "Secret")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
           if "secretKeyRef" in e.get("valueFrom", {})}
    for name in ("LORASERVE_ADMIN_TOKEN", "LORASERVE_INFERENCE_TOKEN"):
        assert env[name]["name"] == secret["metadata"]["name"]
        assert env[name]["key"] in secret["stringData"]
    assert not any(a.startswith(("--admin-token", "--inference-token", "--api-key"))
                   for a in container["args"]), "tokens come from the Secret, not the args"


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_pdb_and_hpa_point_at_the_replicas():
    objects = rendered("base")
    workload, container = server("base")
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selects(workload["spec"]["selector"]["matchLabels"], labels)
    port_names = {p["name"] for p in container["ports"]}
    services = find(objects, "Service")
    assert workload["spec"]["serviceName"] in [s["metadata"]["name"] for s in services]
    for service in services:
        assert selects(service["spec"]["selector"], labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    pdb = find(objects, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    hpa = find(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", workload["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2, "the PDB allows one down: keep two replicas"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    name = metric["pods"]["metric"]["name"]
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), f"{name}: not a legal custom metric name"
    with open(os.path.join(K8S, "prometheus-adapter", "values.yaml")) as f:
        rules = yaml.safe_load(f)["rules"]["custom"]
    assert name in [r["name"]["as"] for r in rules], "prometheus-adapter must publish it"
    assert any("vllm:num_requests_waiting" in r["seriesQuery"] for r in rules)


def test_cuda_overlay_asks_for_one_gpu_and_the_cuda_image():
    _, cpu = server("base")
    _, gpu = server("cuda")
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert str(gpu["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert cpu["image"].endswith(":cpu") and gpu["image"].endswith(":cuda")
    assert int(dict(parse_args(gpu["args"]))["--pool-bytes"]) > \
        int(dict(parse_args(cpu["args"]))["--pool-bytes"])


# --- Gateway API Inference Extension ---------------------------------------------------------

def epp_config():
    (config_map,) = [o for o in rendered("gaie") if o["kind"] == "ConfigMap"]
    (text,) = config_map["data"].values()
    return config_map, yaml.safe_load(text)


def test_gaie_objects_reference_each_other_and_the_replicas():
    objects = rendered("gaie")
    pool = find(objects, "InferencePool", "lora-pool")
    _, container = server("base")
    pod_labels = server("base")[0]["spec"]["template"]["metadata"]["labels"]
    assert selects(pool["spec"]["selector"]["matchLabels"], pod_labels)
    http_port = listen_port(dict(parse_args(container["args"]))["--http-listen"])[1]
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [http_port]

    ref = pool["spec"]["endpointPickerRef"]
    epp_service = find(objects, "Service", ref["name"])
    service_port = [p for p in epp_service["spec"]["ports"] if p["port"] == ref["port"]["number"]]
    assert service_port, "the pool's endpointPickerRef port is not on the EPP Service"
    epp = find(objects, "Deployment", "lora-pool-epp")
    assert selects(epp_service["spec"]["selector"], epp["spec"]["template"]["metadata"]["labels"])
    (epp_container,) = kustomize_lite.pod_spec(epp)["containers"]
    assert service_port[0]["targetPort"] in [p["name"] for p in epp_container["ports"]]
    args = epp_container["args"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags["--pool-name"] == pool["metadata"]["name"]
    assert flags["--grpc-port"] == str(ref["port"]["number"])
    assert epp_container["image"].endswith(":v1.5.0")

    config_map, _ = epp_config()
    mount = {m["name"]: m["mountPath"] for m in epp_container["volumeMounts"]}
    volumes = {v["name"]: v for v in kustomize_lite.pod_spec(epp)["volumes"]}
    config_dir, config_file = os.path.split(flags["--config-file"])
    (volume,) = [n for n, p in mount.items() if p == config_dir]
    assert volumes[volume]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_file in config_map["data"]
    assert kustomize_lite.pod_spec(epp)["serviceAccountName"] == find(objects, "ServiceAccount")[
        "metadata"]["name"]

    for kind in ("InferenceObjective", "InferenceModelRewrite"):
        for obj in (o for o in objects if o["kind"] == kind):
            assert obj["spec"]["poolRef"]["name"] == pool["metadata"]["name"]
    route = find(objects, "HTTPRoute", "lora-pool")
    backends = [b for rule in route["spec"]["rules"] for b in rule["backendRefs"]]
    assert backends == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                         "name": pool["metadata"]["name"]}]
    adapters = set(os.listdir(os.path.join(ROOT, "assets", "adapters")))
    rewrite = find(objects, "InferenceModelRewrite")
    targets = {t["modelRewrite"] for r in rewrite["spec"]["rules"] for t in r["targets"]}
    assert targets <= adapters, f"rewrite targets {targets} are not demo adapters {adapters}"


def test_epp_rbac_covers_what_it_watches():
    objects = rendered("gaie")
    role = find(objects, "Role", "lora-pool-epp")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] if {"get", "list", "watch"} <= set(rule["verbs"])}
    assert {("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
            ("inference.networking.x-k8s.io", "inferenceobjectives"),
            ("inference.networking.x-k8s.io", "inferencemodelrewrites")} <= granted
    binding = find(objects, "RoleBinding", "lora-pool-epp")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "lora-pool-epp"


# PROTOCOLS.md section 2 (apix/config/v1alpha1/endpointpickerconfig_types.go, GAIE v1.5.0).
EPP_CONFIG_KEYS = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles",
                   "saturationDetector", "dataLayer", "flowControl", "parser"}
ENGINE_CONFIG_KEYS = {"name", "queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec",
                      "loraSpec", "cacheInfoSpec", "cacheBlockSizeLabelName",
                      "cacheNumBlocksLabelName", "cacheBlockSizeSpec", "cacheNumBlocksSpec"}


def test_endpoint_picker_config_turns_on_lora_affinity():
    _, config = epp_config()
    assert set(config) <= EPP_CONFIG_KEYS, set(config) - EPP_CONFIG_KEYS
    assert config["apiVersion"] == "inference.networking.x-k8s.io/v1alpha1"
    assert config["kind"] == "EndpointPickerConfig"
    plugins = {p.get("name", p["type"]): p for p in config["plugins"]}
    assert len(plugins) == len(config["plugins"]), "plugin names must be unique"
    for plugin in config["plugins"]:
        assert set(plugin) <= {"name", "type", "parameters"}, plugin

    (profile,) = [p for p in config["schedulingProfiles"] if p["name"] == "default"]
    weights = {}
    for ref in profile["plugins"]:
        assert ref["pluginRef"] in plugins, f"{ref['pluginRef']} is not declared in plugins"
        weights[plugins[ref["pluginRef"]]["type"]] = ref["weight"]
    for scorer in ("lora-affinity-scorer", "queue-scorer", "kv-cache-utilization-scorer"):
        assert weights.get(scorer, 0) > 0, f"{scorer} is not on in the default profile"

    (source,) = config["dataLayer"]["sources"]
    assert plugins[source["pluginRef"]]["type"] == "metrics-data-source"
    assert plugins[source["pluginRef"]]["parameters"]["path"] == "/metrics"
    assert plugins[source["pluginRef"]]["parameters"]["scheme"] == "http"
    (extractor,) = source["extractors"]
    core = plugins[extractor["pluginRef"]]
    assert core["type"] == "core-metrics-extractor"
    engines = core["parameters"]["engineConfigs"]
    for engine in engines:
        assert set(engine) <= ENGINE_CONFIG_KEYS, set(engine) - ENGINE_CONFIG_KEYS
        assert engine["name"] != "default", "`default` is reserved"
    # The pods' engine label must name a mapping the picker has: built in, or declared here.
    labels = server("base")[0]["spec"]["template"]["metadata"]["labels"]
    engine_type = labels["inference.networking.k8s.io/engine-type"]
    assert engine_type in {"vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm"} | {
        e["name"] for e in engines}


# --- linters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_has_no_warnings(path):
    proc = subprocess.run([os.path.join(VENV_BIN, "hadolint"), "--config",
                           os.path.join(ROOT, ".hadolint.yaml"), "--failure-threshold", "warning",
                           os.path.join(ROOT, path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not re.search(r"\b(warning|error)\b", proc.stdout), proc.stdout


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([os.path.join(VENV_BIN, "hadolint"), "--config",
                           os.path.join(ROOT, ".hadolint.yaml"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3008" in proc.stdout, proc.stdout


def test_yamllint_passes_on_deploy():
    # From the root, with a relative path: the config's per-file ignores are relative paths.
    proc = subprocess.run([os.path.join(VENV_BIN, "yamllint"), "--strict", "-c", ".yamllint.yaml",
                           "deploy"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_image_script_is_valid_bash():
    for script in ("scripts/build_image.sh", "deploy/runtime-packages.sh"):
        proc = subprocess.run(["bash", "-n", os.path.join(ROOT, script)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr


def test_runtime_packages_maps_the_built_binary_to_packages():
    # The helper both Dockerfiles run in their build stage, on the binary these tests use.
    proc = subprocess.run(["bash", os.path.join(ROOT, "deploy", "runtime-packages.sh"),
                           loraserve_bin()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    packages = proc.stdout.split()
    assert "libc6" in packages and any(p.startswith("libgrpc++") for p in packages), packages
    assert packages == sorted(set(packages))
