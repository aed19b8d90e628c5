"""deploy/: the Dockerfile and Kubernetes manifests, checked without a cluster or a Docker engine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from shell.cli import build_parser
from worker.settings import PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s" / "base"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
SETTINGS = {PREFIX + name.upper() for name in Settings.model_fields}


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            out[doc["kind"]] = doc
    return out


def containers(doc: dict) -> list[dict]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_kustomization_lists_every_manifest_and_they_parse(docs):
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert on_disk == listed
    assert set(docs) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
                         "ScaledObject", "TriggerAuthentication", "Job"}
    for doc in docs.values():
        assert doc["apiVersion"] and doc["metadata"]["name"]


def test_every_setting_the_manifests_set_exists_and_validates(docs, tmp_path):
    config = docs["ConfigMap"]["data"]
    names = set(config)
    for kind in ("Deployment", "Job"):
        for c in containers(docs[kind]):
            names |= {e["name"] for e in c.get("env", [])}
            assert c["envFrom"] == [{"configMapRef": {"name": "featdistill-config"}}]
    assert names <= SETTINGS, f"unknown settings: {names - SETTINGS}"
    env = {**config, "FEATDISTILL_REDIS_URL": "rediss://redis:6380/0",
           "FEATDISTILL_KAFKA_SASL_USERNAME": "worker", "FEATDISTILL_REDIS_USERNAME": "worker"}
    for name, path in config.items():  # the mounted files, here
        if name.endswith("_FILE"):
            env[name] = str(tmp_path / Path(path).name)
            (tmp_path / Path(path).name).write_text("placeholder")
    load_settings(env)  # the values themselves are valid


def test_secrets_are_mounted_where_the_settings_look_and_exist_in_the_secret(docs):
    secret, config = docs["Secret"], docs["ConfigMap"]["data"]
    keys = set(secret["stringData"])
    assert secret["metadata"]["name"] == "featdistill-secrets"
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())  # no real ones
    for kind in ("Deployment", "Job"):
        pod = docs[kind]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounted: dict[str, str] = {}  # file path in the container -> key of the Secret
        for mount in container["volumeMounts"]:
            source = volumes[mount["name"]].get("secret")
            if source:
                assert source["secretName"] == secret["metadata"]["name"] and mount["readOnly"]
                for item in source["items"]:
                    mounted[f"{mount['mountPath']}/{item['path']}"] = item["key"]
        assert set(mounted.values()) <= keys
        files = {name: path for name, path in config.items() if name.endswith("_FILE")}
        files |= {e["name"]: e["value"] for e in container["env"]
                  if e["name"].endswith("_FILE") and "value" in e}
        assert files and set(files) <= SETTINGS
        for name, path in files.items():
            assert path in mounted, f"{kind}: {name}={path} is not a mounted Secret file"
        for env in container["env"]:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys
        # every secret the settings need arrives one way or the other
        given = set(files) | {e["name"] for e in container["env"]} | set(config)
        assert {"FEATDISTILL_KAFKA_SASL_USERNAME", "FEATDISTILL_KAFKA_SASL_PASSWORD_FILE",
                "FEATDISTILL_KAFKA_CA_FILE", "FEATDISTILL_REDIS_URL", "FEATDISTILL_REDIS_USERNAME",
                "FEATDISTILL_REDIS_PASSWORD_FILE", "FEATDISTILL_REDIS_CA_FILE"} <= given
    auth = docs["TriggerAuthentication"]["spec"]["secretTargetRef"]
    assert {ref["key"] for ref in auth} <= keys
    assert {ref["name"] for ref in auth} == {secret["metadata"]["name"]}


def test_worker_deployment_gpu_probes_and_grace(docs):
    dep, config = docs["Deployment"], docs["ConfigMap"]["data"]
    pod = dep["spec"]["template"]["spec"]
    (worker,) = containers(dep)
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    port = {p["name"]: p["containerPort"] for p in worker["ports"]}["metrics"]
    assert port == int(config["FEATDISTILL_METRICS_PORT"])
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] > float(config["FEATDISTILL_SHUTDOWN_GRACE_S"]) + 5
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    assert config["FEATDISTILL_BUNDLE"].startswith("/models/") and mounts["/models"]["readOnly"]
    secret = {e["name"]: e for e in worker["env"]}["FEATDISTILL_REDIS_URL"]
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "featdistill-secrets"


def test_service_pdb_and_autoscaling_agree_with_the_worker(docs):
    dep, config = docs["Deployment"], docs["ConfigMap"]["data"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = docs[kind]["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items()
    svc_port = docs["Service"]["spec"]["ports"][0]
    assert svc_port["port"] == int(config["FEATDISTILL_METRICS_PORT"])
    assert svc_port["targetPort"] == "metrics"
    scaled = docs["ScaledObject"]
    partitions = int(scaled["metadata"]["annotations"]["featdistill.io/input-topic-partitions"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    assert scaled["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["authenticationRef"]["name"] == docs["TriggerAuthentication"]["metadata"]["name"]
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    assert trigger["metadata"]["sasl"] == keda_sasl[config["FEATDISTILL_KAFKA_SASL_MECHANISM"]]
    assert trigger["metadata"]["tls"] == "enable" and config["FEATDISTILL_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert trigger["metadata"]["consumerGroup"] == config["FEATDISTILL_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["FEATDISTILL_INPUT_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["FEATDISTILL_KAFKA_BOOTSTRAP"]


def test_replay_job_arguments_parse_and_avoid_the_live_topic(docs):
    job, config = docs["Job"], docs["ConfigMap"]["data"]
    (replay,) = containers(job)
    args = build_parser().parse_args(replay["args"])
    assert args.command == "replay" and args.func.__module__ == "worker.replay"
    assert args.to_topic != config["FEATDISTILL_VERDICT_TOPIC"]
    assert str(args.state).startswith("/state/")
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_one_image_for_all_workloads(docs):
    images = {c["image"] for kind in ("Deployment", "Job") for c in containers(docs[kind])}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert images == {kustomization["images"][0]["name"]}


def test_dockerfile_runs_the_worker_as_non_root_without_downloads():
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM "):]  # the runtime stage
    user = re.search(r"^USER (\S+)", final, re.M).group(1)
    assert not user.startswith("0") and user != "root"
    assert re.search(r"^EXPOSE 9400$", final, re.M)
    assert 'ENTRYPOINT ["featdistill"]' in final and 'CMD ["worker"]' in final
    assert "FEATDISTILL_BUNDLE=/models/bundle" in final
    assert "HF_HUB_OFFLINE=1" in final
    for line in final.splitlines():
        if line.startswith(("RUN", "CMD", "ENTRYPOINT")):
            assert not re.search(r"curl|wget|huggingface|hf_hub_download|from_pretrained", line)
    env_names = set(re.findall(r"(FEATDISTILL_[A-Z_]+)=", final))
    assert env_names <= SETTINGS
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        if "$" not in src:
            assert (ROOT / src).exists(), src
    # The image's command line is one the featdistill command runs as the worker.
    command = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))
    assert build_parser().parse_args(command).func.__module__ == "worker.main"
