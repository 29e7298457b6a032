"""deploy/kubernetes: every manifest validates against the Kubernetes 1.30 JSON schemas, and carries the
scheduling, security and secret-handling settings the collector relies on.

Schemas: ``tests/k8s-schemas/v1.30.0-standalone-strict/`` (generated from the ``kubernetes-validate`` wheel by
``tests/k8s-schemas/bundle.py``; strict = unknown fields are errors). The manifests are also checked with the
``kubernetes-validate`` package (in the ``test`` extra; its wheel ships the schemas, so it needs no network) and,
when it is installed, ``kubectl`` (``kubectl kustomize`` renders the kustomization offline); the ``kubectl``
check is skipped without it, and so is the package's when it was not installed with the extra.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from usage_collector.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "k8s-schemas" / "v1.30.0-standalone-strict"
KUSTOMIZATION = K8S / "kustomization.yaml"
#: Files deliberately left out of kustomization.yaml (each is named, with its reason, in a comment there).
NOT_IN_KUSTOMIZATION = {"secret.example.yaml", "backfill-job.yaml"}
UID = 10001

Doc = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)


def load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs() -> list[tuple[str, Doc]]:
    return [(f"{p.name}#{i}", d) for p in manifest_files() for i, d in enumerate(load(p))]


def only(path: str, kind: str) -> Doc:
    docs = [d for d in load(K8S / path) if d["kind"] == kind]
    assert len(docs) == 1
    return docs[0]


@cache
def validator(api_version: str, kind: str) -> Draft202012Validator:
    group_version = api_version  # "v1"; "batch/v1" -> "batch-v1"; "rbac.authorization.k8s.io/v1" -> "rbac-v1"
    if "/" in api_version:
        group, version = api_version.split("/")
        group_version = f"{group.split('.')[0]}-{version}"
    path = SCHEMAS / f"{kind.lower()}-{group_version}.json"
    assert path.exists(), f"no schema for {api_version} {kind} in {SCHEMAS.name} (add it in bundle.py)"
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(doc: Doc) -> list[str]:
    v = validator(doc["apiVersion"], doc["kind"])
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in v.iter_errors(doc)]


# --- schema validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "doc"), all_docs(), ids=[n for n, _ in all_docs()])
def test_manifest_validates_against_the_kubernetes_schema(name: str, doc: Doc) -> None:
    assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), name
    assert errors(doc) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"]["jobTemplate"]["spec"].update(activeDeadline=240), "activeDeadline"),
        (lambda d: d["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name'"),
        (lambda d: d["spec"]["jobTemplate"]["spec"].update(backoffLimit="two"), "two"),
    ],
    ids=["unknown-field", "missing-required", "wrong-type"],
)
def test_the_schemas_do_reject_bad_manifests(mutate: Any, expected: str) -> None:
    doc = copy.deepcopy(only("cronjob.yaml", "CronJob"))
    mutate(doc)
    assert any(expected in e for e in errors(doc)), errors(doc)


def test_kubernetes_validate_package_agrees_if_installed() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for name, doc in all_docs():
        try:
            kv.validate(doc, "1.30", strict=True)
        except kv.ValidationError as exc:  # pragma: no cover - a failure is reported
            pytest.fail(f"{name}: {exc.message}")


# --- kustomization -----------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_except_the_documented_one_offs() -> None:
    kust = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kust["kind"] == "Kustomization"
    resources = set(kust["resources"])
    files = {p.name for p in manifest_files()}
    assert resources <= files, f"listed but missing: {resources - files}"
    assert files - resources == NOT_IN_KUSTOMIZATION
    comments = KUSTOMIZATION.read_text()
    for name in NOT_IN_KUSTOMIZATION:
        assert re.search(rf"#\s+{re.escape(name)}\s+-", comments), f"say why {name} is not listed"
    [image] = kust["images"]
    assert (
        image["name"]
        == only("cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "image"
        ].split(":")[0]
    )


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_kustomize_renders_valid_resources() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "CronJob", "ServiceAccount"]
    for doc in docs:
        assert errors(doc) == [], doc["kind"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "usage-collector"
    [cron] = [d for d in docs if d["kind"] == "CronJob"]
    image = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/usage-collector:0.1.0"


# --- the CronJob -------------------------------------------------------------------------------------------


@pytest.fixture
def config_toml(tmp_path: Path) -> Path:
    """The ConfigMap's config.toml, written out as the pod sees it."""
    target = tmp_path / "config.toml"
    target.write_text(only("configmap.yaml", "ConfigMap")["data"]["config.toml"])
    return target


def interval_seconds(schedule: str) -> int:
    match = re.fullmatch(r"\*/(\d+) \* \* \* \*", schedule)
    assert match, f"expected an every-N-minutes schedule, got {schedule!r}"
    return int(match.group(1)) * 60


def test_cronjob_schedule_never_overlaps_and_ends_stuck_runs_before_the_next(config_toml: Path) -> None:
    cron = only("cronjob.yaml", "CronJob")["spec"]
    assert cron["schedule"] == "*/5 * * * *"
    assert cron["timeZone"] == "Etc/UTC"
    assert cron["concurrencyPolicy"] == "Forbid"
    interval = interval_seconds(cron["schedule"])
    assert cron["startingDeadlineSeconds"] == 300 <= interval
    assert cron["successfulJobsHistoryLimit"] >= 1 and cron["failedJobsHistoryLimit"] >= 1
    job = cron["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2
    assert job["activeDeadlineSeconds"] == 240 < interval
    assert job["ttlSecondsAfterFinished"] > 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"][-1] == "run"
    # The lease must outlive a pod killed at the deadline, but not block the schedule much longer.
    lease = load_settings(config_toml).lease_ttl
    assert job["activeDeadlineSeconds"] < lease <= job["activeDeadlineSeconds"] + interval


def pods() -> list[tuple[str, Doc]]:
    cron = only("cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    backfill = only("backfill-job.yaml", "Job")["spec"]["template"]["spec"]
    return [("cronjob", cron), ("backfill", backfill)]


@pytest.mark.parametrize(("name", "pod"), pods(), ids=[n for n, _ in pods()])
def test_pod_runs_as_an_unprivileged_user_on_a_read_only_root(name: str, pod: Doc) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert ":" in c["image"] and not c["image"].endswith(":latest")
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and {v["name"]: v for v in pod["volumes"]}[tmp[0]["name"]].get("emptyDir") is not None
    # The checkpoint is in Elasticsearch: no persistent volume, no host path.
    for volume in pod["volumes"]:
        assert not {"persistentVolumeClaim", "hostPath"} & set(volume), volume


def mounted_file(pod: Doc, path: str) -> tuple[str, Doc]:
    """The volume (its kind and spec) that provides the file ``path`` inside the container."""
    [c] = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            assert m.get("readOnly") is True, m
            volume = volumes[m["name"]]
            rel = path[len(prefix) :]
            for kind in ("secret", "configMap"):
                if kind in volume:
                    items = {i["path"]: i["key"] for i in volume[kind].get("items", [])}
                    assert rel in items, f"{path}: {rel} is not an item of volume {m['name']}"
                    return kind, {**volume[kind], "key": items[rel]}
    raise AssertionError(f"nothing is mounted at {path}")


@pytest.mark.parametrize(("name", "pod"), pods(), ids=[n for n, _ in pods()])
def test_secrets_come_from_secrets_and_config_from_the_configmap(name: str, pod: Doc) -> None:
    [c] = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert "OPENAI_ADMIN_KEY" not in env  # the key is a file, never an environment variable
    kind, source = mounted_file(pod, env["OPENAI_ADMIN_KEY_FILE"]["value"])
    assert kind == "secret" and source["secretName"] == "usage-collector-openai" and source["key"] == "admin-key"
    assert source["defaultMode"] == 0o440
    kind, source = mounted_file(pod, env["USAGE_COLLECTOR_CONFIG"]["value"])
    assert env["USAGE_COLLECTOR_CONFIG"]["value"] == "/etc/usage-collector/config.toml"
    assert kind == "configMap" and source["name"] == "usage-collector-config" and source["key"] == "config.toml"
    assert env["ELASTICSEARCH_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "usage-collector-elasticsearch",
        "key": "url",
    }
    assert "ELASTICSEARCH_API_KEY" not in env  # a file too (ELASTICSEARCH_API_KEY_FILE), never an environment variable
    kind, source = mounted_file(pod, env["ELASTICSEARCH_API_KEY_FILE"]["value"])
    assert kind == "secret" and source["secretName"] == "usage-collector-elasticsearch" and source["key"] == "api-key"
    assert source["defaultMode"] == 0o440
    for e in c["env"]:
        assert "value" not in e or not re.search(r"sk-[A-Za-z0-9]{8,}", str(e["value"]))


def test_the_example_secrets_match_what_the_pods_reference() -> None:
    secrets = {d["metadata"]["name"]: d for d in load(K8S / "secret.example.yaml")}
    assert set(secrets["usage-collector-openai"]["stringData"]) == {"admin-key"}
    assert set(secrets["usage-collector-elasticsearch"]["stringData"]) == {"url", "api-key"}
    text = (K8S / "secret.example.yaml").read_text()
    assert not re.search(r"sk-[A-Za-z0-9_\-]{8,}", text)  # placeholders only


def test_the_configmap_is_a_valid_collector_configuration(config_toml: Path) -> None:
    data = tomllib.loads(only("configmap.yaml", "ConfigMap")["data"]["config.toml"])
    assert data["sink"] == "elasticsearch"
    settings = load_settings(config_toml)
    assert settings.sink_spec() == "elasticsearch"
    assert settings.lease_ttl == 300


# --- the backfill Job --------------------------------------------------------------------------------------


def test_backfill_job_runs_a_resumable_backfill_with_a_long_lease(config_toml: Path) -> None:
    job = only("backfill-job.yaml", "Job")
    spec = job["spec"]
    [c] = spec["template"]["spec"]["containers"]
    args = c["args"]
    assert "backfill" in args
    start = args[args.index("--start") + 1]
    date.fromisoformat(start)
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1  # a retry resumes where the failed pod stopped
    assert spec["activeDeadlineSeconds"] >= 3600
    assert spec["ttlSecondsAfterFinished"] > 0
    env = {e["name"]: e.get("value") for e in c["env"]}
    lease = load_settings(config_toml, lease_ttl=env["USAGE_COLLECTOR_LEASE_TTL"]).lease_ttl
    assert lease == spec["activeDeadlineSeconds"]  # held for as long as the Job may live, no longer
    # Same image and pod security as the CronJob.
    cron_c = only("cronjob.yaml", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == cron_c["image"]
    assert c["securityContext"] == cron_c["securityContext"]


def test_no_manifest_fails_validation_for_want_of_a_schema() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for _, d in all_docs()}
    assert kinds == {
        ("batch/v1", "CronJob"),
        ("batch/v1", "Job"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
    }
    for api_version, kind in kinds:
        validator(api_version, kind)
