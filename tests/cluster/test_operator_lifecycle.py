"""The operator and chart on a real control plane: install, reconcile, roll, scale, suspend, delete, recover.

The chart is installed with helm (CRD, RBAC, ServiceAccount, the operator Deployment). On the local
control plane kwok pods run no containers, so the operator under test runs as a local process
(`python -m storyteller_operator`) authenticated as the chart's ServiceAccount: every test also proves
the ClusterRole grants enough. Waits are polls on observable state with deadlines, never sleeps.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from storyteller_api import contract
from storyteller_devkit.cluster import Cluster
from storyteller_devkit.operator_process import OperatorProcess
from storyteller_devkit.real_platform import (
    condition,
    get_sd,
    is_ready,
    secret_metadata_grant,
    tenant_secret,
    tenant_yaml,
    wait_established,
    wait_for,
)
from storyteller_operator import render

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "storyteller"
RELEASE = "storyteller"
RELEASE_NS = "storyteller-system"
SA = "storyteller"
CHILD_KINDS = ("deployment", "configmap", "service", "serviceaccount", "poddisruptionbudget", "networkpolicy")


# Generous: kwok's fake kubelet can take tens of seconds to report a pod Running or gone on the local plane.
POD_DEADLINE = 180.0


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def chart(cluster: Cluster) -> Iterator[None]:
    """The chart installed as a user would (helm install --wait), operator Deployment included."""
    if cluster.mode == "kind":
        # Real kubelets there: worker and operator pods would need the images built and loaded first
        # (examples/kind/deploy.sh), which these tests do not do.
        pytest.skip(
            "operator lifecycle tests run on the local (kwok) control plane; on kind use examples/kind/"
        )
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART),
        "--namespace", RELEASE_NS, "--create-namespace", "--reset-values", "--wait", "--timeout", "3m",
    )  # fmt: skip
    wait_established(cluster, "storytellerdeployments.storyteller.dev")
    yield


def _sa_kubeconfig(cluster: Cluster, path: Path, namespace: str = RELEASE_NS, account: str = SA) -> Path:
    """A kubeconfig for the chart's ServiceAccount, so the local operator has exactly the chart's RBAC. Its
    context's namespace is the account's, as in a pod: the operator's leader-election Lease goes there."""
    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration", "2h").stdout.strip()
    view = cluster.kubectl_json("config", "view", "--raw", "--minify")
    server = view["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": "c", "user": "operator", "namespace": namespace}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def operator(
    cluster: Cluster, chart: None, tmp_path: Path, operator_env: dict[str, str]
) -> Iterator[OperatorProcess]:
    env = {**cluster.env, "KUBECONFIG": str(_sa_kubeconfig(cluster, tmp_path / "operator.kubeconfig"))}
    env.pop("STORYTELLER_OPERATOR_NAMESPACES", None)
    env.update(operator_env)
    args = ["--recheck-seconds", "1", "--resync-seconds", "3", "--log-format", "json"]
    op = OperatorProcess(env, tmp_path / "operator.log", args).start()
    try:
        yield op
    finally:
        status = op.stop()
        # Keep the log next to the test's tmp dir; print its tail when the test failed (pytest shows it).
        print(f"operator log: {op.log_path}\n" + op.log_path.read_text()[-4000:])
    # Every test also proves a SIGTERM ends the operator by itself (a pod that does not would hold its
    # node until the grace period's SIGKILL). Any exit status of its own counts.
    assert status is not None and status >= 0, f"the operator had to be killed (exit status {status})"


# ------------------------------------------------------------------------------------------------ helpers


def secrets_yaml(
    ns: str, *, livekit: str = "livekit-credentials", providers: tuple[str, ...] = ("acme-openai",)
) -> str:
    """The tenant's Secrets as the chart README has a namespace's owner give them: labelled for the
    namespace's tenants, and their metadata readable by the chart's operator."""
    key = {"LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "s3cr3t-" + secrets.token_hex(8)}
    docs = [tenant_secret(ns, livekit, key)]
    docs += [tenant_secret(ns, p, {"OPENAI_API_KEY": "sk-test-" + secrets.token_hex(8)}) for p in providers]
    docs.append(secret_metadata_grant(ns, RELEASE, RELEASE_NS))
    return yaml.safe_dump_all(docs)


def patch_spec(cluster: Cluster, ns: str, spec: dict[str, Any], name: str = "acme") -> None:
    """A merge patch of the tenant's spec, as a user would make with kubectl."""
    cluster.kubectl("-n", ns, "patch", "sd", name, "--type=merge", "-p", json.dumps({"spec": spec}))


def worker_pods(cluster: Cluster, ns: str, name: str = "acme") -> list[dict[str, Any]]:
    """The tenant's worker pods that are not terminating."""
    selector = render.selector_string(name)
    items = cluster.kubectl_json("-n", ns, "get", "pods", "-l", selector)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def worker_replicas(cluster: Cluster, ns: str, name: str = "acme") -> int:
    """What the operator asks of the worker Deployment."""
    dep = cluster.kubectl_json("-n", ns, "get", "deployment", render.worker_name(name))
    return int(dep["spec"]["replicas"])


def ready_pods(cluster: Cluster, ns: str, name: str = "acme") -> int:
    pods = cluster.kubectl_json("-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    return sum(
        1
        for p in pods
        if p["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])
        )
    )


def children(cluster: Cluster, ns: str, name: str = "acme") -> dict[str, list[dict[str, Any]]]:
    out = {}
    for kind in CHILD_KINDS:
        items = cluster.kubectl_json("-n", ns, "get", kind, "-l", f"storyteller.dev/tenant={name}")["items"]
        out[kind] = items
    return out


def writes_fingerprint(cluster: Cluster, ns: str, name: str = "acme") -> dict[str, Any]:
    """What changes when anyone but a controller's status update writes the tenant or its children.

    resourceVersion for objects only the operator and the user write; for the Deployment and the PDB
    (whose status controllers update) their generation and the operator's managedFields entry, which the
    API server re-stamps whenever an apply by the operator changes something.
    """
    out: dict[str, Any] = {"sd": get_sd(cluster, ns, name)["metadata"]["resourceVersion"]}
    for kind, items in children(cluster, ns, name).items():
        for item in items:
            meta = item["metadata"]
            if kind in ("deployment", "poddisruptionbudget"):
                ours = [
                    m for m in meta.get("managedFields", []) if m.get("manager") == "storyteller-operator"
                ]
                out[f"{kind}/{meta['name']}"] = (meta.get("generation"), ours)
            else:
                out[f"{kind}/{meta['name']}"] = meta["resourceVersion"]
    return out


def quiescent(cluster: Cluster, ns: str, name: str = "acme") -> bool:
    """Ready, and no pod of an old ReplicaSet still terminating (its removal updates statuses)."""
    pods = cluster.kubectl_json("-n", ns, "get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    dep = cluster.kubectl_json("-n", ns, "get", "deployment", f"{name}-worker")
    st = dep.get("status", {})
    return (
        bool(is_ready(cluster, ns, name))
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
        and not st.get("terminatingReplicas")
        and st.get("replicas") == dep["spec"]["replicas"]
    )


def grant_secret_metadata(cluster: Cluster, ns: str) -> None:
    """What the chart README tells a namespace's owner to apply so the operator may read Secret metadata
    there (the chart's default ClusterRole has no right on Secrets); secrets_yaml applies it too."""
    cluster.apply(yaml.safe_dump(secret_metadata_grant(ns, RELEASE, RELEASE_NS)))


def deploy_ready_tenant(cluster: Cluster, ns: str, name: str = "acme", **spec: Any) -> dict[str, Any]:
    cluster.apply(secrets_yaml(ns))
    cluster.apply(tenant_yaml(ns, name, **spec))
    return wait_for(f"tenant {ns}/{name} Ready", lambda: is_ready(cluster, ns, name), deadline=POD_DEADLINE)


# ---------------------------------------------------------------------------------------------------- tests


def test_chart_installs_crd_rbac_and_operator(cluster: Cluster, chart: None) -> None:
    crd = cluster.kubectl_json("get", "crd", "storytellerdeployments.storyteller.dev")
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    role = cluster.kubectl_json("get", "clusterrole", RELEASE)
    for rule in role["rules"]:
        assert (
            "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule.get("apiGroups", [])
        )
    # Two replicas electing a leader on a Lease, one of them kept through drains.
    assert cluster.kubectl_json("-n", RELEASE_NS, "get", "deployment", RELEASE)["spec"]["replicas"] == 2
    assert cluster.kubectl_json("-n", RELEASE_NS, "get", "pdb", RELEASE)["spec"]["minAvailable"] == 1
    assert cluster.kubectl_json("-n", RELEASE_NS, "get", "serviceaccount", SA)


def test_the_documented_crd_upgrade_updates_the_crd_helm_installed(
    cluster: Cluster, chart: None, tmp_path: Path
) -> None:
    """`helm upgrade` never touches a CRD: the chart README's command must, over Helm's own fields."""
    readme = (CHART / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if line.startswith("helm show crds ")]
    crd_name = "storytellerdeployments.storyteller.dev"
    # A newer chart whose CRD differs (a changed description), run from a directory laid out like the repo.
    newer = tmp_path / "helm" / "storyteller"
    shutil.copytree(CHART, newer)
    crd_file = next((newer / "crds").glob("*.yaml"))
    marker = f"upgraded-{secrets.token_hex(4)}"
    doc = yaml.safe_load(crd_file.read_text())
    doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = marker
    crd_file.write_text(yaml.safe_dump(doc))

    def run_documented_command() -> None:
        proc = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=cluster.env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def description() -> str:
        got = cluster.kubectl_json("get", "crd", crd_name)
        return str(got["spec"]["versions"][0]["schema"]["openAPIV3Schema"].get("description", ""))

    try:
        run_documented_command()
        assert description() == marker
        managers = {
            f["manager"]
            for f in cluster.kubectl_json("get", "crd", crd_name, "--show-managed-fields")["metadata"][
                "managedFields"
            ]
        }
        assert "kubectl" in managers, managers
    finally:
        shutil.rmtree(newer)
        shutil.copytree(CHART, newer)  # the chart as committed, applied the same way
        run_documented_command()
    assert description() != marker
    wait_established(cluster, crd_name)


def test_tenant_gets_owned_children_and_becomes_ready(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    sd = deploy_ready_tenant(cluster, namespace, pool={"minReplicas": 2, "drainTimeoutSeconds": 1})
    st = sd["status"]
    assert (
        st["replicas"] == 2
        and st["readyReplicas"] == 2
        and st["desiredReplicas"] == 2
        and st["capacity"] == 8
    )
    assert st["selector"] == "app.kubernetes.io/instance=acme,app.kubernetes.io/name=storyteller-worker"
    uid = sd["metadata"]["uid"]
    kids = children(cluster, namespace)
    for kind in CHILD_KINDS:
        assert len(kids[kind]) == 1, f"expected one {kind}, got {len(kids[kind])}"
        (ref,) = kids[kind][0]["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True
    assert wait_for("2 ready worker pods", lambda: ready_pods(cluster, namespace) == 2)

    # Keys reach the pods by reference only: not in the ConfigMap, the pod spec's literals or the status.
    real = cluster.kubectl_json("-n", namespace, "get", "secrets")["items"]
    secret_values = [base64.b64decode(v).decode() for s in real for v in (s.get("data") or {}).values()]
    dump = json.dumps([kids["configmap"], kids["deployment"], sd]) + op_log(operator)
    for value in secret_values:
        if len(value) > 6:
            assert value not in dump

    cm = kids["configmap"][0]
    config = json.loads(cm["data"]["tenant.json"])
    assert config["tenant"] == "acme" and config["namespace"] == namespace and config["agentName"] == "acme"
    assert "providerSecrets" not in config and "worker" not in config and "suspend" not in config

    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )
    reasons = {e["reason"] for e in events["items"]}
    assert {"Applied", "PoolReady"} <= reasons
    assert operator.metric("storyteller_pool_desired_replicas", namespace=namespace, tenant="acme") == 2


def op_log(operator: OperatorProcess) -> str:
    return operator.log_path.read_text()


# At debug: the no-op reconciles counted below log at debug only (at info they are silent).
@pytest.mark.parametrize("operator_env", [{"STORYTELLER_OPERATOR_LOG_LEVEL": "debug"}], ids=["debug"])
def test_instruction_change_rolls_the_pool_and_no_change_writes_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    sd = deploy_ready_tenant(cluster, namespace)
    old_hash = sd["status"]["configHash"]
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "acme-worker")
    assert dep["spec"]["template"]["metadata"]["annotations"]["storyteller.dev/config-hash"] == old_hash
    old_rs = {rs["metadata"]["name"] for rs in cluster.kubectl_json("-n", namespace, "get", "rs")["items"]}

    cluster.kubectl(
        "-n", namespace, "patch", "sd", "acme", "--type=merge",
        "-p", json.dumps({"spec": {"story": {"instructions": "Tell a short story about a lighthouse."}}}),
    )  # fmt: skip
    sd = wait_for(
        "the new config to roll out",
        lambda: (s := is_ready(cluster, namespace)) and s["status"]["configHash"] != old_hash and s,
        deadline=POD_DEADLINE,
    )
    assert sd["status"]["observedGeneration"] == 2
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "acme-worker")
    assert (
        dep["spec"]["template"]["metadata"]["annotations"]["storyteller.dev/config-hash"]
        == sd["status"]["configHash"]
    )
    new_rs = {rs["metadata"]["name"] for rs in cluster.kubectl_json("-n", namespace, "get", "rs")["items"]}
    assert new_rs - old_rs, "a spec change must create a new ReplicaSet (the pool rolls)"
    # Each config revision is its own immutable ConfigMap; an old one stays while status.revisions keeps
    # its revision (a pin may go back to it), and goes once it leaves the history and no pod mounts it.
    cm = cluster.kubectl_json(
        "-n", namespace, "get", "configmap", render.config_map_name("acme", sd["status"]["configHash"])
    )
    assert cm["immutable"] is True
    assert (
        json.loads(cm["data"]["tenant.json"])["story"]["instructions"]
        == "Tell a short story about a lighthouse."
    )
    wait_for("the rollout to settle", lambda: quiescent(cluster, namespace))
    old_cm = render.config_map_name("acme", old_hash)
    assert [e["revision"] for e in sd["status"]["revisions"]] == [2, 1]
    assert old_cm in {c["metadata"]["name"] for c in children(cluster, namespace)["configmap"]}
    cluster.kubectl(
        "-n", namespace, "patch", "sd", "acme", "--type=merge", "-p", '{"spec": {"revisionHistoryLimit": 1}}'
    )  # fmt: skip
    wait_for(
        f"{old_cm} deleted once revision 1 leaves the history and no pod mounts it",
        lambda: old_cm not in {c["metadata"]["name"] for c in children(cluster, namespace)["configmap"]},
    )
    wait_for(
        "the history to keep revision 2 only",
        lambda: [e["revision"] for e in get_sd(cluster, namespace)["status"]["revisions"]] == [2],
    )

    # Unchanged: re-apply the same manifest and let the operator re-apply everything (resync every 3 s).
    before = writes_fingerprint(cluster, namespace)
    cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "sd",
        "acme",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"story": {"instructions": "Tell a short story about a lighthouse."}}}),
    )
    mark = len(operator.records("acme"))

    def reconciled_since_mark() -> list[dict[str, Any]]:
        return [
            r
            for r in operator.records("acme")[mark:]
            if r.get("namespace") == namespace and r.get("message") == "reconciled"
        ]

    wait_for("three more reconciles of the tenant", lambda: len(reconciled_since_mark()) >= 3, deadline=60)
    recs = reconciled_since_mark()
    assert all(r["changed"] == [] and r["status_written"] is False for r in recs), recs
    assert all(r["level"] == "debug" for r in recs), recs  # a reconcile that wrote nothing is no news
    assert writes_fingerprint(cluster, namespace) == before


def test_scale_subresource_and_suspend(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    # autoscaler none: the user sizes the pool with kubectl scale (spec.replicas).
    deploy_ready_tenant(cluster, namespace, pool={"autoscaler": "none"})
    cluster.kubectl("-n", namespace, "scale", "sd", "acme", "--replicas=3")
    sd = wait_for(
        "3 ready replicas",
        lambda: (s := is_ready(cluster, namespace)) and s["status"]["readyReplicas"] == 3 and s,
    )
    assert sd["spec"]["replicas"] == 3 and sd["spec"]["pool"]["minReplicas"] == 1
    assert (
        condition(sd, "ScalingLimited")["message"]
        == "spec.replicas asks for 3 workers, within the pool's bounds"
    )
    scale = cluster.kubectl_json("-n", namespace, "get", "sd", "acme", "--subresource=scale")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert "app.kubernetes.io/instance=acme" in scale["status"]["selector"]

    cluster.kubectl("-n", namespace, "patch", "sd", "acme", "--type=merge", "-p", '{"spec":{"suspend":true}}')

    def suspended() -> dict[str, Any] | None:
        s = get_sd(cluster, namespace)
        st = s.get("status", {})
        done = (
            st.get("phase") == "Suspended"
            and st.get("replicas") == 0
            and st.get("observedGeneration") == s["metadata"]["generation"]
        )
        return s if done else None

    sd = wait_for("the pool to be suspended", suspended)
    assert condition(sd, "Ready")["reason"] == "Suspended"
    assert sd["status"]["desiredReplicas"] == 0
    assert cluster.kubectl_json("-n", namespace, "get", "deployment", "acme-worker")["spec"]["replicas"] == 0
    assert wait_for("no worker pods", lambda: ready_pods(cluster, namespace) == 0 or None) is True

    cluster.kubectl(
        "-n", namespace, "patch", "sd", "acme", "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    wait_for(
        "the pool back", lambda: (s := is_ready(cluster, namespace)) and s["status"]["readyReplicas"] == 3
    )


def test_deleting_the_tenant_deletes_every_child(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    deploy_ready_tenant(cluster, namespace)
    assert all(children(cluster, namespace).values())
    cluster.kubectl("-n", namespace, "delete", "sd", "acme", "--wait=true", "--timeout=60s")

    def all_gone() -> bool:
        kids = children(cluster, namespace)
        pods = cluster.kubectl_json("-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance=acme")[
            "items"
        ]
        return not any(kids.values()) and not pods

    wait_for("every child to be garbage-collected", all_gone, deadline=POD_DEADLINE)


def test_missing_secret_degrades_and_recovers(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # kwok runs no kubelet to say a Secret is missing: the operator is granted Secret metadata here.
    grant_secret_metadata(cluster, namespace)
    cluster.apply(secrets_yaml(namespace, providers=()))  # only the LiveKit credentials
    cluster.apply(tenant_yaml(namespace, providerSecrets=["acme-openai"]))

    def degraded() -> dict[str, Any] | None:
        s = get_sd(cluster, namespace)
        return s if s.get("status", {}).get("phase") == "Degraded" else None

    sd = wait_for("Degraded", degraded)
    deg = condition(sd, "Degraded")
    assert deg["status"] == "True" and deg["reason"] == "SecretNotFound"
    assert '"acme-openai"' in deg["message"] and "spec.providerSecrets[0]" in deg["message"]
    assert condition(sd, "Ready")["status"] == "False"
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )
    assert any(e["reason"] == "SecretNotFound" and e["type"] == "Warning" for e in events["items"])

    cluster.apply(secrets_yaml(namespace, providers=("acme-openai",)))
    sd = wait_for("Ready once the Secret exists", lambda: is_ready(cluster, namespace))
    assert condition(sd, "Degraded")["status"] == "False"


def test_restricted_namespace_admits_worker_pods(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    deploy_ready_tenant(cluster, namespace, pool={"minReplicas": 2, "drainTimeoutSeconds": 1})
    assert wait_for("2 ready pods admitted under restricted", lambda: ready_pods(cluster, namespace) == 2)
    rs = cluster.kubectl_json("-n", namespace, "get", "rs")["items"]
    failures = [
        c for r in rs for c in r.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"
    ]
    assert failures == []


def test_operator_killed_mid_reconcile_converges(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    names = [f"t{i:02d}" for i in range(20)]
    cluster.apply(secrets_yaml(namespace))
    cluster.apply("---\n".join(tenant_yaml(namespace, n) for n in names))
    # Kill as soon as the operator is part-way: some tenants have children, not all are reconciled.
    wait_for(
        "the operator to be mid-way",
        lambda: cluster.kubectl_json("-n", namespace, "get", "deployments")["items"],
        deadline=60,
        every=0.05,
    )
    operator.kill()
    partial = len(cluster.kubectl_json("-n", namespace, "get", "deployments")["items"])
    operator.start()

    def all_ready() -> bool:
        items = cluster.kubectl_json("-n", namespace, "get", "sd")["items"]
        return len(items) == 20 and all(
            i.get("status", {}).get("phase") == "Ready"
            and i["status"].get("observedGeneration") == i["metadata"]["generation"]
            for i in items
        )

    wait_for("all 20 tenants Ready after the restart", all_ready, deadline=180, every=0.5)
    for kind in CHILD_KINDS:
        items = cluster.kubectl_json(
            "-n", namespace, "get", kind, "-l", "app.kubernetes.io/managed-by=storyteller-operator"
        )["items"]
        per_tenant = sorted(i["metadata"]["labels"]["storyteller.dev/tenant"] for i in items)
        assert per_tenant == names, f"{kind}: expected exactly one per tenant"
    rs = cluster.kubectl_json("-n", namespace, "get", "rs")["items"]
    assert len(rs) == 20, "one ReplicaSet per tenant: a restart must not roll anything"
    print(f"killed with {partial}/20 Deployments created")


def test_operator_health_and_metrics(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    deploy_ready_tenant(cluster, namespace)
    text = operator.metrics()
    for name in (
        "storyteller_operator_reconcile_total",
        "storyteller_operator_reconcile_seconds_bucket",
        "storyteller_pool_desired_replicas",
    ):
        assert name in text
    assert operator.metric("storyteller_operator_reconcile_total", result="changed") >= 1
    assert operator.healthy()


def api_requests(operator: OperatorProcess) -> dict[tuple[str, str], float]:
    """storyteller_operator_api_requests_total by (verb, resource)."""
    out = {}
    for line in operator.metrics().splitlines():
        if line.startswith("storyteller_operator_api_requests_total{"):
            labels = dict(kv.split("=", 1) for kv in line[line.index("{") + 1 : line.index("}")].split(","))
            out[(labels["verb"].strip('"'), labels["resource"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_steady_tenant_costs_the_api_server_nothing(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """With the chart's RBAC and every recheck (1 s) and full resync (3 s) running: once a tenant is Ready
    and quiet, its reconciles read the watches' memory and write nothing, so the operator sends the API
    server no request for it (a watch that ends is renewed; none does within this window)."""
    # The counter is the operator's, for all tenants: an earlier test's tenant whose namespace is still being
    # deleted gets one refused re-apply when its children go. Measure this tenant alone.
    wait_for(
        "earlier tests' tenants to be gone",
        lambda: (
            {t["metadata"]["namespace"] for t in cluster.kubectl_json("get", "sd", "-A")["items"]}
            <= {namespace}
        ),
        deadline=180,
    )
    grant_secret_metadata(cluster, namespace)  # its Secrets are watched, not asked for by name
    deploy_ready_tenant(cluster, namespace)
    wait_for("the rollout to settle", lambda: quiescent(cluster, namespace))

    total = "storyteller_operator_reconcile_total"

    def reconciles() -> float:
        return sum(operator.metric(total, result=r) for r in ("changed", "unchanged", "error"))

    wait_for("a reconcile that changes nothing", lambda: operator.metric(total, result="unchanged") >= 1)
    before, reconciled = api_requests(operator), reconciles()
    # Three full resyncs' worth of reconciles of this tenant.
    wait_for("10 more reconciles", lambda: reconciles() >= reconciled + 10, deadline=60)
    after = api_requests(operator)
    sent = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    # Discovery (is KEDA, the Prometheus Operator served?) is the operator's, not a tenant's: one request per
    # optional API every 30 s while absent (discovery.py), whatever the number of tenants.
    per_tenant = {k: n for k, n in sent.items() if k[1] != "discovery"}
    assert per_tenant == {}, f"requests sent by steady reconciles: {sent}"
    assert operator.metric(total, result="error") == 0
    # Reads did go through the operator's client before: the counter counts.
    assert after[("LIST", "storytellerdeployments")] >= 1 and after[("WATCH", "pods")] >= 1


# ------------------------------------------------------------------------------------ API-server validation

VALID_LIVEKIT = {"url": "wss://lk.example.com", "credentialsSecret": "lk"}
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no-livekit", {}, "spec.livekit"),
    ("livekit-url-scheme", {"livekit": {"url": "https://lk", "credentialsSecret": "lk"}}, "spec.livekit.url"),
    ("livekit-no-secret", {"livekit": {"url": "wss://lk"}}, "spec.livekit.credentialsSecret"),
    (
        "secret-not-dns",
        {"livekit": {"url": "wss://lk", "credentialsSecret": "Bad_Name"}},
        "spec.livekit.credentialsSecret",
    ),
    ("provider-secret-not-dns", {"providerSecrets": ["ok", "NOT OK"]}, "spec.providerSecrets[1]"),
    ("agent-name-not-dns", {"agentName": "Acme Agent"}, "spec.agentName"),
    (
        "unknown-llm-provider",
        {"intro": {"llm": {"provider": "anthropic", "model": "x"}}},
        "spec.intro.llm.provider",
    ),
    (
        "unknown-stt-provider",
        {"intro": {"stt": {"provider": "whisper", "model": "x"}}},
        "spec.intro.stt.provider",
    ),
    (
        "unknown-tts-provider",
        {"story": {"tts": {"provider": "elevenlabs", "model": "x"}}},
        "spec.story.tts.provider",
    ),
    ("model-missing", {"story": {"llm": {"provider": "openai"}}}, "spec.story.llm.model"),
    (
        "realtime-with-tts",
        {
            "story": {
                "llm": {"provider": "openai-realtime", "model": "gpt-realtime"},
                "tts": {"provider": "openai", "model": "tts-1"},
            }
        },
        "spec.story.tts",
    ),
    (
        "overlapping-bridge-without-tts",
        {
            "intro": {
                "llm": {"provider": "openai-realtime", "model": "gpt-realtime"},
                "handoff": {"mode": "overlapping"},
            }
        },
        "spec.intro.handoff.mode",
    ),
    ("bridge-mode-unknown", {"intro": {"handoff": {"mode": "parallel"}}}, "spec.intro.handoff.mode"),
    ("turn-detection-unknown", {"turnDetection": "silence"}, "spec.turnDetection"),
    ("bridge-too-long", {"intro": {"handoff": {"bridge": "x" * 257}}}, "spec.intro.handoff.bridge"),
    (
        "realtime-intro-with-tts",
        {
            "intro": {
                "llm": {"provider": "openai-realtime", "model": "gpt-realtime"},
                "tts": {"provider": "openai", "model": "tts-1"},
            }
        },
        "spec.intro.tts",
    ),
    (
        "realtime-with-fallbacks",
        {
            "story": {
                "llm": {
                    "provider": "openai-realtime",
                    "model": "r",
                    "fallbacks": [{"provider": "openai", "model": "m"}],
                }
            }
        },
        "spec.story.llm.fallbacks",
    ),
    (
        "realtime-as-fallback",
        {
            "intro": {
                "llm": {
                    "provider": "openai",
                    "model": "m",
                    "fallbacks": [{"provider": "openai-realtime", "model": "r"}],
                }
            }
        },
        "spec.intro.llm.fallbacks[0].provider",
    ),
    (
        "base-url-scheme",
        {"intro": {"llm": {"provider": "openai", "model": "m", "baseURL": "ftp://x"}}},
        "spec.intro.llm.baseURL",
    ),
    (
        "temperature-too-high",
        {"intro": {"llm": {"provider": "openai", "model": "m", "temperature": 3}}},
        "spec.intro.llm.temperature",
    ),
    ("min-above-max", {"pool": {"minReplicas": 5, "maxReplicas": 2}}, "spec.pool.minReplicas"),
    ("negative-min", {"pool": {"minReplicas": -1}}, "spec.pool.minReplicas"),
    ("zero-max", {"pool": {"maxReplicas": 0}}, "spec.pool.maxReplicas"),
    ("zero-sessions-per-worker", {"pool": {"sessionsPerWorker": 0}}, "spec.pool.sessionsPerWorker"),
    ("negative-drain", {"pool": {"drainTimeoutSeconds": -5}}, "spec.pool.drainTimeoutSeconds"),
    ("unknown-autoscaler", {"pool": {"autoscaler": "hpa"}}, "spec.pool.autoscaler"),
    ("metrics-port-low", {"observability": {"metricsPort": 80}}, "spec.observability.metricsPort"),
    ("metrics-port-health", {"observability": {"metricsPort": 8081}}, "spec.observability.metricsPort"),
    ("metrics-port-ready", {"observability": {"metricsPort": 8082}}, "spec.observability.metricsPort"),
    ("unknown-log-level", {"observability": {"logLevel": "trace"}}, "spec.observability.logLevel"),
    (
        "sample-ratio",
        {"observability": {"tracing": {"sampleRatio": 1.5}}},
        "spec.observability.tracing.sampleRatio",
    ),
    (
        "otlp-scheme",
        {"observability": {"tracing": {"otlpEndpoint": "otel:4317"}}},
        "spec.observability.tracing.otlpEndpoint",
    ),
    ("pull-policy", {"worker": {"imagePullPolicy": "Sometimes"}}, "spec.worker.imagePullPolicy"),
    (
        "reserved-pod-label",
        {"worker": {"podLabels": {"app.kubernetes.io/instance": "x"}}},
        "spec.worker.podLabels",
    ),
    ("suspend-not-bool", {"suspend": "yes"}, "spec.suspend"),
    (
        "bad-quantity",
        {"worker": {"resources": {"requests": {"cpu": "lots"}}}},
        "spec.worker.resources.requests",
    ),
    (
        "quantity-too-long",
        {"worker": {"resources": {"limits": {"memory": "1" * 65}}}},
        "spec.worker.resources.limits",
    ),
    # Bounds: every integer has a ceiling as well as a floor.
    ("drain-zero", {"pool": {"drainTimeoutSeconds": 0}}, "spec.pool.drainTimeoutSeconds"),
    ("drain-30-years", {"pool": {"drainTimeoutSeconds": 946080000}}, "spec.pool.drainTimeoutSeconds"),
    ("sessions-per-worker-huge", {"pool": {"sessionsPerWorker": 101}}, "spec.pool.sessionsPerWorker"),
    ("idle-processes-huge", {"pool": {"idleProcesses": 17}}, "spec.pool.idleProcesses"),
    ("min-replicas-huge", {"pool": {"minReplicas": 1001, "maxReplicas": 1000}}, "spec.pool.minReplicas"),
    ("max-replicas-huge", {"pool": {"maxReplicas": 1001}}, "spec.pool.maxReplicas"),
    ("spare-sessions-huge", {"pool": {"spareSessions": 1001}}, "spec.pool.spareSessions"),
    ("scale-down-delay-years", {"pool": {"scaleDownDelaySeconds": 86401}}, "spec.pool.scaleDownDelaySeconds"),
    ("replicas-huge", {"replicas": 1001}, "spec.replicas"),
    ("metrics-port-huge", {"observability": {"metricsPort": 65536}}, "spec.observability.metricsPort"),
    # Shapes.
    (
        "model-with-space",
        {"intro": {"stt": {"provider": "deepgram", "model": "nova 3"}}},
        "spec.intro.stt.model",
    ),
    (
        "language-not-a-tag",
        {"intro": {"stt": {"provider": "deepgram", "model": "nova-3", "language": "english (us)"}}},
        "spec.intro.stt.language",
    ),
    ("image-with-space", {"worker": {"image": "reg.example/w:1 --privileged"}}, "spec.worker.image"),
    ("url-without-host", {"livekit": {**VALID_LIVEKIT, "url": "wss://"}}, "spec.livekit.url"),
    # Reserved pod annotations: the operator's, pod-deletion-cost (the operator prices pods), kubectl's.
    (
        "annotation-deletion-cost",
        {"worker": {"podAnnotations": {"controller.kubernetes.io/pod-deletion-cost": "1000"}}},
        "spec.worker.podAnnotations",
    ),
    (
        "annotation-config-hash",
        {"worker": {"podAnnotations": {"storyteller.dev/config-hash": "x"}}},
        "spec.worker.podAnnotations",
    ),
    (
        "annotation-kubectl",
        {"worker": {"podAnnotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}}},
        "spec.worker.podAnnotations",
    ),
    # Credentials in URLs (the test checks the error never repeats hunter2).
    (
        "livekit-url-userinfo",
        {"livekit": {**VALID_LIVEKIT, "url": "wss://key:hunter2@lk.example.com"}},
        "spec.livekit.url",
    ),
    (
        "livekit-url-token-userinfo",
        {"livekit": {**VALID_LIVEKIT, "url": "wss://hunter2@lk"}},
        "spec.livekit.url",
    ),
    (
        "livekit-url-access-token",
        {"livekit": {**VALID_LIVEKIT, "url": "wss://lk.example.com/rtc?access_token=hunter2"}},
        "spec.livekit.url",
    ),
    (
        "base-url-api-key",
        {
            "intro": {
                "llm": {"provider": "openai", "model": "m", "baseURL": "https://m.example/v1?api-key=hunter2"}
            }
        },
        "spec.intro.llm.baseURL",
    ),
    (
        "base-url-userinfo",
        {
            "intro": {
                "llm": {"provider": "openai", "model": "m", "baseURL": "http://u:hunter2@models:8000/v1"}
            }
        },
        "spec.intro.llm.baseURL",
    ),
    (
        "fallback-base-url-key",
        {
            "intro": {
                "llm": {
                    "provider": "openai",
                    "model": "m",
                    "fallbacks": [
                        {"provider": "openai", "model": "m2", "baseURL": "https://m/v1?x=1&Key=hunter2"}
                    ],
                }
            }
        },
        "spec.intro.llm.fallbacks[0].baseURL",
    ),
    (
        "stt-base-url-x-api-key",
        {
            "story": {
                "stt": {"provider": "deepgram", "model": "nova-3", "baseURL": "https://d?X-API-KEY=hunter2"}
            }
        },
        "spec.story.stt.baseURL",
    ),
    (
        "otlp-userinfo",
        {"observability": {"tracing": {"otlpEndpoint": "https://tenant:hunter2@otel.example.com"}}},
        "spec.observability.tracing.otlpEndpoint",
    ),
    (
        "otlp-signature",
        {"observability": {"tracing": {"otlpEndpoint": "https://otel/v1/traces?sig=hunter2"}}},
        "spec.observability.tracing.otlpEndpoint",
    ),
    # LiveKit media egress.
    (
        "media-range-reversed",
        {"worker": {"livekitMedia": {"udpPortRangeStart": 60000, "udpPortRangeEnd": 50000}}},
        "spec.worker.livekitMedia.udpPortRangeStart",
    ),
    (
        "media-range-start-zero",
        {"worker": {"livekitMedia": {"udpPortRangeStart": 0}}},
        "spec.worker.livekitMedia.udpPortRangeStart",
    ),
    (
        "media-range-end-huge",
        {"worker": {"livekitMedia": {"udpPortRangeEnd": 65536}}},
        "spec.worker.livekitMedia.udpPortRangeEnd",
    ),
    (
        "media-udp-port-zero",
        {"worker": {"livekitMedia": {"udpPorts": [0]}}},
        "spec.worker.livekitMedia.udpPorts[0]",
    ),
    (
        "media-tcp-port-huge",
        {"worker": {"livekitMedia": {"tcpPorts": [443, 70000]}}},
        "spec.worker.livekitMedia.tcpPorts[1]",
    ),
    (
        "media-too-many-ports",
        {"worker": {"livekitMedia": {"tcpPorts": list(range(1000, 1009))}}},
        "spec.worker.livekitMedia.tcpPorts",
    ),
    (
        "media-cidr-prefix",
        {"worker": {"livekitMedia": {"cidrs": ["10.0.0.0/33"]}}},
        "spec.worker.livekitMedia.cidrs[0]",
    ),
    (
        "media-cidr-host",
        {"worker": {"livekitMedia": {"cidrs": ["10.0.0.0/8", "livekit.example.com"]}}},
        "spec.worker.livekitMedia.cidrs[1]",
    ),
]


@pytest.fixture(scope="module")
def validation_ns(cluster: Cluster, chart: None) -> Iterator[str]:
    name = f"st-validation-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize(("case", "spec", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_tenant_is_rejected_naming_the_field(
    cluster: Cluster, validation_ns: str, case: str, spec: dict[str, Any], field: str
) -> None:
    body = {"livekit": VALID_LIVEKIT, **spec}
    if case == "no-livekit":
        del body["livekit"]
    manifest = yaml.safe_dump(
        {
            "apiVersion": "storyteller.dev/v1alpha1",
            "kind": "StorytellerDeployment",
            "metadata": {"name": f"bad-{case}"[:48].rstrip("-"), "namespace": validation_ns},
            "spec": body,
        }
    )
    proc = cluster.kubectl("create", "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0, f"{case} was accepted"
    assert field in proc.stderr, f"{case}: the error does not name {field}:\n{proc.stderr}"
    # A CEL refusal shows the value's type, never the value (the credential of the URL cases).
    assert "hunter2" not in proc.stderr, f"{case}: the error repeats the credential"
    # Nothing half-created.
    assert cluster.kubectl_json("-n", validation_ns, "get", "sd")["items"] == []


def test_invalid_tenant_name_is_rejected(cluster: Cluster, validation_ns: str) -> None:
    manifest = yaml.safe_dump(
        {
            "apiVersion": "storyteller.dev/v1alpha1",
            "kind": "StorytellerDeployment",
            "metadata": {"name": "a" * 50, "namespace": validation_ns},
            "spec": {"livekit": VALID_LIVEKIT},
        }
    )
    proc = cluster.kubectl("create", "-f", "-", input=manifest, check=False)
    assert proc.returncode != 0 and "metadata.name" in proc.stderr


def test_example_tenant_applies_as_is(cluster: Cluster, operator: OperatorProcess) -> None:
    """examples/tenant.yaml (+ its Secrets) works unchanged on the local cluster."""
    ns = "storyteller-example"
    try:
        cluster.kubectl("apply", "-f", str(REPO / "examples" / "tenant-secrets.yaml"))
        cluster.kubectl("apply", "-f", str(REPO / "examples" / "tenant.yaml"))
        wait_for("the example tenant Ready", lambda: is_ready(cluster, ns, "acme"), deadline=POD_DEADLINE)
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


POD_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: podmonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: PodMonitor, listKind: PodMonitorList, plural: podmonitors, singular: podmonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""


@pytest.fixture
def pod_monitor_crd(cluster: Cluster) -> None:
    """A stand-in for the Prometheus Operator's PodMonitor CRD, installed before the operator starts."""
    existing = cluster.kubectl("get", "crd", "podmonitors.monitoring.coreos.com", check=False)
    if existing.returncode != 0:
        cluster.apply(POD_MONITOR_CRD)
    wait_established(cluster, "podmonitors.monitoring.coreos.com")


def test_pod_monitor_when_the_prometheus_operator_crds_exist(
    cluster: Cluster, pod_monitor_crd: None, namespace: str, operator: OperatorProcess
) -> None:
    sd = deploy_ready_tenant(cluster, namespace)
    (pm,) = cluster.kubectl_json("-n", namespace, "get", "podmonitors.monitoring.coreos.com")["items"]
    assert pm["metadata"]["name"] == "acme-worker"
    assert pm["metadata"]["ownerReferences"][0]["uid"] == sd["metadata"]["uid"]
    assert pm["spec"]["podMetricsEndpoints"] == render.pod_monitor(sd)["spec"]["podMetricsEndpoints"]
    assert pm["spec"]["podMetricsEndpoints"][0]["honorLabels"] is False


# ------------------------------------------------------------------- what rolls the pool, and what must not


def replica_sets(cluster: Cluster, ns: str) -> set[str]:
    return {rs["metadata"]["name"] for rs in cluster.kubectl_json("-n", ns, "get", "rs")["items"]}


def test_resizing_the_pool_does_not_roll_it_and_a_rotated_key_does(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    grant_secret_metadata(cluster, namespace)  # a key's rotation is seen in the Secret's resourceVersion
    sd = deploy_ready_tenant(cluster, namespace)
    config_hash, before = sd["status"]["configHash"], replica_sets(cluster, namespace)
    pool = {"minReplicas": 2, "maxReplicas": 7, "spareSessions": 5, "scaleDownDelaySeconds": 60}
    cluster.kubectl(
        "-n", namespace, "patch", "sd", "acme", "--type=merge", "-p", json.dumps({"spec": {"pool": pool}})
    )
    sd = wait_for(
        "two ready workers",
        lambda: (s := is_ready(cluster, namespace)) and s["status"]["readyReplicas"] == 2 and s,
    )
    assert sd["status"]["configHash"] == config_hash
    assert replica_sets(cluster, namespace) == before, "resizing the pool must not roll it"
    assert (sd["status"]["revision"], len(sd["status"]["revisions"])) == (1, 1), "nor make a revision"

    # A rotated key: the pods read it only when they start, so the pool rolls (with the usual drain).
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "acme-worker")
    old_secrets_hash = dep["spec"]["template"]["metadata"]["annotations"][contract.SECRETS_HASH_ANNOTATION]
    cluster.kubectl(
        "-n", namespace, "patch", "secret", "acme-openai", "--type=merge",
        "-p", json.dumps({"stringData": {"OPENAI_API_KEY": "sk-rotated-" + secrets.token_hex(8)}}),
    )  # fmt: skip
    wait_for(
        "the pool to roll for the rotated key",
        lambda: (replica_sets(cluster, namespace) - before) and is_ready(cluster, namespace),
        deadline=POD_DEADLINE,
    )
    dep = cluster.kubectl_json("-n", namespace, "get", "deployment", "acme-worker")
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][contract.SECRETS_HASH_ANNOTATION]
        != old_secrets_hash
    )
    assert get_sd(cluster, namespace)["status"]["configHash"] == config_hash  # the config did not change
    events = cluster.kubectl_json(
        "-n", namespace, "get", "events", "--field-selector", "involvedObject.name=acme"
    )
    # A revision of its own, saying which Secret; the pods carry its number.
    status = get_sd(cluster, namespace)["status"]
    assert status["revision"] == 2 and status["revisions"][0]["change"] == "Secret acme-openai rotated"
    assert dep["spec"]["template"]["metadata"]["labels"][contract.REVISION_LABEL] == "2"
    said = "revision 2 (Secret acme-openai rotated), rolling the pool"
    assert any(said in e["message"] for e in events["items"]), [e["message"] for e in events["items"]]
    # `kubectl get sd -o wide` shows it (columns are aligned under their headers).
    header, row = cluster.kubectl("-n", namespace, "get", "sd", "acme", "-o", "wide").stdout.splitlines()[:2]
    assert row[header.index("REVISION") :].split()[0] == "2", (header, row)


def test_one_agent_name_on_one_server_stays_with_the_tenant_that_claimed_it_first(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """A second tenant (another namespace) copies the first's agent name and LiveKit server: the first
    keeps serving, the second runs no worker and says why without naming the first, until it is renamed."""
    other_ns = f"{namespace[:50]}-b"
    labels = {"storyteller.dev/test": "true"}
    cluster.apply(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other_ns, "labels": labels}}
        )
    )
    try:
        shared = {  # one LiveKit server for both, whose name says nothing of either namespace
            "url": f"ws://livekit-{secrets.token_hex(4)}.example.test:7880",
            "credentialsSecret": "livekit-credentials",
        }
        first = deploy_ready_tenant(cluster, namespace, agentName="storyteller", livekit=shared)
        created = datetime.datetime.fromisoformat(first["metadata"]["creationTimestamp"])
        # creationTimestamp counts whole seconds: the copy must be created in a later one to be later.
        wait_for(
            "a later second",
            lambda: datetime.datetime.now(datetime.UTC) >= created + datetime.timedelta(seconds=1),
        )
        cluster.apply(secrets_yaml(other_ns))
        cluster.apply(tenant_yaml(other_ns, agentName="storyteller", livekit=shared))

        def held() -> dict[str, Any] | None:
            sd = get_sd(cluster, other_ns)
            return sd if condition(sd, "Degraded").get("reason") == "AgentNameConflict" else None

        sd = wait_for("the copy to be held", held)
        message = condition(sd, "Degraded")["message"]
        assert '"storyteller"' in message and namespace not in message, message
        assert condition(sd, "Ready")["reason"] == "AgentNameConflict"
        wait_for("the copy to run no worker", lambda: worker_replicas(cluster, other_ns) == 0)
        events = cluster.kubectl_json(
            "-n", other_ns, "get", "events", "--field-selector", "reason=AgentNameConflict"
        )
        assert events["items"] and all(namespace not in e["message"] for e in events["items"])
        # The first is untouched: Ready, not Degraded, its worker running.
        original = get_sd(cluster, namespace)
        assert condition(original, "Degraded")["status"] == "False" and is_ready(cluster, namespace)
        assert worker_replicas(cluster, namespace) == 1

        # The copy takes another name: it serves too.
        patch_spec(cluster, other_ns, {"agentName": "storyteller-b"})
        wait_for("the copy Ready", lambda: is_ready(cluster, other_ns), deadline=POD_DEADLINE)
        assert condition(get_sd(cluster, other_ns), "Degraded")["status"] == "False"
        assert worker_replicas(cluster, other_ns) == 1
    finally:
        cluster.kubectl("delete", "namespace", other_ns, "--wait=false", "--ignore-not-found", check=False)


def test_an_operator_for_given_namespaces_needs_nothing_cluster_wide(
    cluster: Cluster, chart: None, namespace: str, tmp_path: Path
) -> None:
    """A second release that watches one namespace: Roles only, and its operator still sees Secrets there."""
    release, release_ns = "storyteller-scoped", f"{namespace[:48]}-op"  # its objects: "storyteller-scoped"
    cluster.helm(
        "install", release, str(CHART), "--namespace", release_ns, "--create-namespace", "--wait",
        "--set", "operator.enabled=false", "--set", "dashboards.enabled=false",
        "--set-json", f'operator.watchNamespaces=["{namespace}"]',
    )  # fmt: skip
    op = None
    try:
        manifest = [
            d
            for d in yaml.safe_load_all(cluster.helm("get", "manifest", release, "-n", release_ns).stdout)
            if d
        ]
        kinds = {d["kind"] for d in manifest}
        assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
        scoped = {(d["kind"], d["metadata"]["namespace"]) for d in manifest if d["kind"].startswith("Role")}
        # The watched namespace's rights, and the leader-election Lease's in the release namespace.
        assert scoped == {
            ("Role", namespace), ("RoleBinding", namespace), ("Role", release_ns), ("RoleBinding", release_ns)
        }  # fmt: skip
        env = {
            **cluster.env,
            "KUBECONFIG": str(_sa_kubeconfig(cluster, tmp_path / "scoped.kubeconfig", release_ns, release)),
            "STORYTELLER_OPERATOR_NAMESPACES": namespace,
            # This release's Lease (the default is the release storyteller's).
            "STORYTELLER_OPERATOR_LEASE_NAME": f"{release}-leader",
        }
        args = ["--recheck-seconds", "1", "--resync-seconds", "3", "--log-format", "json"]
        op = OperatorProcess(env, tmp_path / "scoped-operator.log", args).start()
        cluster.apply(secrets_yaml(namespace, providers=()))
        cluster.apply(tenant_yaml(namespace, providerSecrets=["acme-openai"]))
        sd = wait_for(
            "SecretNotFound, read with the namespace's Role",
            lambda: (
                (s := get_sd(cluster, namespace))
                and condition(s, "Degraded").get("reason") == "SecretNotFound"
                and s
            ),
        )
        assert '"acme-openai"' in condition(sd, "Degraded")["message"]
        cluster.apply(secrets_yaml(namespace, providers=("acme-openai",)))
        wait_for("Ready once the Secret exists", lambda: is_ready(cluster, namespace), deadline=POD_DEADLINE)
        assert "forbidden" not in op.log_path.read_text().lower()  # the Roles grant all it does
    finally:
        if op is not None:
            op.stop()
            print(f"operator log: {op.log_path}\n" + op.log_path.read_text()[-4000:])
        cluster.helm("uninstall", release, "-n", release_ns, check=False)
        cluster.kubectl("delete", "namespace", release_ns, "--wait=false", "--ignore-not-found", check=False)
