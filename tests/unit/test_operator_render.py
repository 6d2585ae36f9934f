"""The operator's pure rendering: a stored tenant (defaults applied as the API server would) → manifests."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from storyteller_api import contract
from storyteller_api.spec import TenantSpec
from storyteller_operator import render, scaling
from storyteller_operator.tenant import Tenant

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "storyteller.dev_storytellerdeployments.yaml"


@functools.cache
def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: a missing field gets its default, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, sub in (schema.get("properties") or {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(sub, out[key])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def tenant(
    spec: dict[str, Any] | None = None, name: str = "acme", namespace: str = "team-a"
) -> dict[str, Any]:
    base = {"livekit": {"url": "wss://lk.example.com", "credentialsSecret": "lk-creds"}}
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "generation": 1},
        "spec": apply_defaults(spec_schema(), {**base, **(spec or {})}),
    }


def env_of(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


# ------------------------------------------------------------------------------------------ worker config


def test_worker_config_is_spec_minus_pod_fields_plus_identity() -> None:
    t = tenant({"providerSecrets": ["openai"], "worker": {"image": "x:1"}, "suspend": True})
    cfg = render.worker_config("acme", "team-a", t["spec"])
    assert "worker" not in cfg and "suspend" not in cfg and "providerSecrets" not in cfg
    assert cfg["tenant"] == "acme" and cfg["namespace"] == "team-a"
    assert cfg["agentName"] == "acme"
    assert set(cfg) == {
        "agentName",
        "livekit",
        "persona",
        "intro",
        "story",
        "pool",
        "observability",
        "turnDetection",
        "tenant",
        "namespace",
    }
    assert cfg["turnDetection"] == "model"
    # camelCase keys and defaults exactly as stored
    assert cfg["pool"]["drainTimeoutSeconds"] == 900
    assert "tts" not in cfg["intro"]  # no schema default (a realtime intro has none); the worker fills it
    assert cfg["story"]["carryChatContext"] is False
    assert cfg["observability"]["tracing"] == {"sampleRatio": 1.0, "captureContent": False}


def test_explicit_agent_name_is_kept() -> None:
    t = tenant({"agentName": "storyteller"})
    assert render.worker_config("acme", "ns", t["spec"])["agentName"] == "storyteller"


def test_render_does_not_mutate_input() -> None:
    t = tenant({"providerSecrets": ["a"]})
    before = copy.deepcopy(t)
    render.children(t, pod_monitor_enabled=True)
    cfg = render.worker_config("acme", "ns", t["spec"])
    cfg["intro"]["llm"]["model"] = "changed"
    assert t == before


def test_worker_config_loads_in_the_worker_model() -> None:
    config = pytest.importorskip("storyteller_worker.config")
    t = tenant(
        {
            "providerSecrets": ["openai"],
            "story": {"llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "echo"}},
            "observability": {"tracing": {"otlpEndpoint": "http://otel:4317", "sampleRatio": 0.5}},
        }
    )
    cm = render.config_map(t)
    parsed = config.parse_tenant_config(json.loads(cm["data"][contract.CONFIG_KEY]))
    assert parsed.tenant == "acme" and parsed.agent_name == "acme"
    assert parsed.story.llm.provider == "openai-realtime"


def test_config_hash_follows_the_config_only() -> None:
    a = tenant()
    b = tenant({"intro": {"instructions": "Be brief."}})
    c = tenant({"worker": {"image": "other:2"}})
    ha, hb, hc = (render.config_hash(render.worker_config("acme", "team-a", t["spec"])) for t in (a, b, c))
    assert ha != hb
    assert ha == hc  # image changes roll the pool through the pod template itself

    def ann(t: dict[str, Any]) -> str:
        return str(
            render.deployment(t)["spec"]["template"]["metadata"]["annotations"][
                contract.CONFIG_HASH_ANNOTATION
            ]
        )

    assert ann(a) == ha and ann(b) == hb


def test_config_json_is_canonical() -> None:
    cfg = render.worker_config("acme", "ns", tenant()["spec"])
    assert render.config_json(cfg) == render.config_json(dict(reversed(list(cfg.items()))))


# ---------------------------------------------------------------------------------------------- children


def test_children_names_and_owner_references() -> None:
    kids = render.children(tenant(), pod_monitor_enabled=False)
    revision = render.config_hash(render.tenant_config(Tenant.from_object(tenant())))
    assert [(k["kind"], k["metadata"]["name"]) for k in kids] == [
        ("ServiceAccount", "acme-worker"),
        ("ConfigMap", f"acme-config-{revision}"),
        ("Service", "acme-metrics"),
        ("NetworkPolicy", "acme-worker"),
        ("Deployment", "acme-worker"),
        ("PodDisruptionBudget", "acme-worker"),
    ]
    for k in kids:
        assert k["metadata"]["namespace"] == "team-a"
        (ref,) = k["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "storyteller.dev/v1alpha1",
            "kind": "StorytellerDeployment",
            "name": "acme",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert k["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "storyteller-operator"


def test_pod_monitor_only_when_enabled() -> None:
    kinds = [k["kind"] for k in render.children(tenant(), pod_monitor_enabled=True)]
    assert kinds[-1] == "PodMonitor"
    pm = render.pod_monitor(tenant())
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("metrics", "/metrics", False)
    # The labels that decide anything come from the pod's operator-set labels, never from what it exports.
    assert {(r["sourceLabels"][0], r["targetLabel"]) for r in endpoint["relabelings"]} == {
        ("__meta_kubernetes_pod_label_storyteller_dev_tenant", "tenant"),
        ("__meta_kubernetes_pod_label_storyteller_dev_revision", "revision"),
    }


def test_service_account_mounts_no_token() -> None:
    assert render.service_account(tenant())["automountServiceAccountToken"] is False


def test_deployment_replicas_follow_min_replicas_and_suspend() -> None:
    assert render.deployment(tenant({"pool": {"minReplicas": 3}}))["spec"]["replicas"] == 3
    assert render.deployment(tenant({"pool": {"minReplicas": 3}, "suspend": True}))["spec"]["replicas"] == 0
    assert scaling.desired_replicas(TenantSpec.model_validate(tenant()["spec"])) == 1


def test_deployment_pod_is_restricted() -> None:
    pod = render.deployment(tenant())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "acme-worker"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsUser"] == 1000 and sc["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "config", "mountPath": "/etc/storyteller", "readOnly": True} in c["volumeMounts"]
    assert c["command"] == ["python", "-m", "storyteller_worker", "start"]


def test_grace_period_covers_the_drain() -> None:
    pod = render.deployment(tenant({"pool": {"drainTimeoutSeconds": 120}}))["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 150


def test_probes_and_ports() -> None:
    (c,) = render.deployment(tenant({"observability": {"metricsPort": 9200}}))["spec"]["template"]["spec"][
        "containers"
    ]
    assert {"name": "http", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    assert {"name": "metrics", "containerPort": 9200, "protocol": "TCP"} in c["ports"]
    assert {"name": "ready", "containerPort": 8082, "protocol": "TCP"} in c["ports"]
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/", "port": "http"}
    # Ready only once registered with LiveKit (the worker's own endpoint, see readiness.py).
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ready"}
    svc = render.metrics_service(tenant({"observability": {"metricsPort": 9200}}))
    assert svc["spec"]["ports"][0]["port"] == 9200
    assert svc["spec"]["selector"] == render.selector_labels("acme")


def test_secrets_by_reference_only() -> None:
    t = tenant({"providerSecrets": ["acme-openai", "acme-deepgram"]})
    dep = render.deployment(t)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = env_of(dep)
    assert env["LIVEKIT_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "lk-creds", "key": "LIVEKIT_API_KEY"}
    }
    assert env["LIVEKIT_API_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "lk-creds"
    assert c["envFrom"] == [{"secretRef": {"name": "acme-openai"}}, {"secretRef": {"name": "acme-deepgram"}}]
    literal = {e["name"] for e in c["env"] if "value" in e}
    assert literal == {"STORYTELLER_CONFIG", "PROMETHEUS_MULTIPROC_DIR", contract.JOB_MEMORY_LIMIT_ENV}
    assert env["STORYTELLER_CONFIG"]["value"] == "/etc/storyteller/tenant.json"
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] == "/tmp/prometheus-multiproc"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}


def test_no_env_from_without_provider_secrets() -> None:
    (c,) = render.deployment(tenant())["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in c


def test_tracing_env_only_with_an_endpoint() -> None:
    assert not any(k.startswith("OTEL_") for k in env_of(render.deployment(tenant())))
    t = tenant({"observability": {"tracing": {"otlpEndpoint": "http://otel.obs:4317", "sampleRatio": 0.25}}})
    env = env_of(render.deployment(t))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel.obs:4317"
    assert env["OTEL_SERVICE_NAME"]["value"] == "storyteller-worker"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == (
        "storyteller.tenant=acme,k8s.namespace.name=team-a,k8s.pod.name=$(POD_NAME)"
    )
    names = [e["name"] for e in render.deployment(t)["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # $(POD_NAME) needs it first


def test_user_labels_and_annotations_cannot_override_ours() -> None:
    t = tenant({"worker": {"podLabels": {"team": "a"}, "podAnnotations": {"a": "b"}}})
    t["spec"]["worker"]["podLabels"]["app.kubernetes.io/instance"] = (
        "evil"  # the CRD refuses it; belt and braces
    )
    t["spec"]["worker"]["podAnnotations"][contract.CONFIG_HASH_ANNOTATION] = "evil"
    tpl = render.deployment(t)["spec"]["template"]["metadata"]
    assert tpl["labels"]["team"] == "a" and tpl["labels"]["app.kubernetes.io/instance"] == "acme"
    assert tpl["annotations"]["a"] == "b" and tpl["annotations"][contract.CONFIG_HASH_ANNOTATION] != "evil"


def test_scheduling_fields_pass_through() -> None:
    worker = {
        "nodeSelector": {"pool": "voice"},
        "tolerations": [{"key": "voice", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "image": "reg.example/w:2",
        "imagePullPolicy": "Always",
    }
    pod = render.deployment(tenant({"worker": worker}))["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == worker["nodeSelector"]
    assert pod["tolerations"] == worker["tolerations"]
    assert pod["affinity"] == worker["affinity"]
    (c,) = pod["containers"]
    # The tenant's requests as given; a memory limit half again its request (see resources.py).
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1536Mi"}}
    assert c["image"] == "reg.example/w:2" and c["imagePullPolicy"] == "Always"


def test_deployment_rolls_without_losing_capacity() -> None:
    spec = render.deployment(tenant())["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["selector"]["matchLabels"] == render.selector_labels("acme")


def test_pdb() -> None:
    pdb = render.pod_disruption_budget(tenant())
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == render.selector_labels("acme")


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("wss://lk.example.com", 443),
        ("ws://lk:7880", 7880),
        ("https://x", 443),
        ("http://x", 80),
        ("wss://h:8443/p", 8443),
    ],
)
def test_url_port(url: str, port: int) -> None:
    assert render.url_port(url) == port


def test_network_policy_allows_only_dns_livekit_providers_otlp() -> None:
    t = tenant(
        {
            "livekit": {"url": "ws://livekit.lk:7880", "credentialsSecret": "lk"},
            "intro": {
                "llm": {
                    "provider": "openai",
                    "model": "m",
                    "baseURL": "http://models.local:8000/v1",
                    "fallbacks": [{"provider": "openai", "model": "n"}],
                }
            },
            "observability": {"tracing": {"otlpEndpoint": "http://otel:4317"}},
        }
    )
    np = render.network_policy(t)
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["podSelector"]["matchLabels"] == render.selector_labels("acme")
    ports = [sorted((p["protocol"], p["port"]) for p in rule["ports"]) for rule in np["spec"]["egress"]]
    assert ports == [
        [("TCP", 53), ("UDP", 53)],
        [("TCP", 7880)],
        [("TCP", 443), ("TCP", 5349), ("TCP", 7881), ("UDP", 3478), ("UDP", 7882), ("UDP", 50000)],  # media
        [("TCP", 443), ("TCP", 8000)],
        [("TCP", 4317)],
    ]
    assert all("to" not in rule for rule in np["spec"]["egress"])
    ingress_ports = sorted(p["port"] for p in np["spec"]["ingress"][0]["ports"])
    assert ingress_ports == [8081, 8082, 9100]


def test_network_policy_without_tracing_has_no_otlp_rule() -> None:
    assert len(render.network_policy(tenant())["spec"]["egress"]) == 4


def test_referenced_secrets_name_their_fields() -> None:
    t = tenant({"providerSecrets": ["a", "b"]})
    assert render.referenced_secrets(TenantSpec.model_validate(t["spec"])) == [
        ("lk-creds", "spec.livekit.credentialsSecret"),
        ("a", "spec.providerSecrets[0]"),
        ("b", "spec.providerSecrets[1]"),
    ]


def test_selector_string() -> None:
    assert (
        render.selector_string("acme")
        == "app.kubernetes.io/instance=acme,app.kubernetes.io/name=storyteller-worker"
    )


def test_rendered_config_loads_in_the_worker() -> None:
    """The operator's tenant.json is exactly what the worker's WorkerConfig accepts (the contract)."""
    from storyteller_worker.config import parse_tenant_config

    t = tenant({"intro": {"llm": {"provider": "openai-realtime", "model": "gpt-realtime", "voice": "echo"}}})
    cfg = parse_tenant_config(render.worker_config("acme", "team-a", t["spec"]))
    assert cfg.agent_name == "acme" and cfg.intro.llm.realtime and cfg.intro.tts is None


# ------------------------------------------------------------------------------ LiveKit media egress


def egress_admits(policy: dict[str, Any], protocol: str, port: int, address: str | None = None) -> bool:
    """Whether a NetworkPolicy's egress lets the pod send `protocol`/`port` to `address`.

    As a CNI reads it: the rules are alternatives; a rule without `to` admits any address, one with `to`
    only the addresses of its ipBlocks (an unknown address, None, matches none of them); a rule without
    `ports` admits every port; a port entry without protocol is TCP, and with `endPort` is a range.
    """
    for rule in policy["spec"]["egress"]:
        peers = rule.get("to")
        if peers and (address is None or not any(_in_block(address, p.get("ipBlock")) for p in peers)):
            continue
        entries = rule.get("ports")
        if not entries:
            return True
        for entry in entries:
            assert isinstance(entry.get("port", 0), int), "named ports are not rendered"
            if entry.get("protocol", "TCP") != protocol:
                continue
            if "port" not in entry or entry["port"] <= port <= entry.get("endPort", entry["port"]):
                return True
    return False


def _in_block(address: str, block: dict[str, Any] | None) -> bool:
    import ipaddress

    if block is None:
        return False
    ip = ipaddress.ip_address(address)
    nets = [ipaddress.ip_network(c, strict=False) for c in block.get("except", [])]
    return ip in ipaddress.ip_network(block["cidr"], strict=False) and not any(ip in n for n in nets)


def test_the_default_policy_admits_livekits_own_media_ports() -> None:
    """LiveKit's defaults (livekit-server and LiveKit Cloud): ICE over UDP 50000-60000 and TCP 7881, TURN
    over UDP 3478 and over TLS on 443 and 5349; to any address."""
    np = render.network_policy(tenant())
    for protocol, port in [
        ("UDP", 50000),
        ("UDP", 55555),
        ("UDP", 60000),
        ("UDP", 3478),
        ("TCP", 7881),
        ("TCP", 443),
        ("TCP", 5349),
    ]:
        assert egress_admits(np, protocol, port), (protocol, port)
        assert egress_admits(np, protocol, port, "198.51.100.7"), (protocol, port)
    for protocol, port in [("UDP", 49999), ("UDP", 60001), ("TCP", 50000), ("UDP", 7881), ("TCP", 80)]:
        assert not egress_admits(np, protocol, port), (protocol, port)


def test_media_egress_is_limited_to_the_cidrs_when_set() -> None:
    media = {"cidrs": ["203.0.113.0/24", "2001:db8::/32"]}
    np = render.network_policy(tenant({"worker": {"livekitMedia": media}}))
    for protocol, port in [("UDP", 50000), ("UDP", 3478), ("TCP", 7881), ("TCP", 5349)]:
        assert egress_admits(np, protocol, port, "203.0.113.9"), (protocol, port)
        assert egress_admits(np, protocol, port, "2001:db8::1"), (protocol, port)
        assert not egress_admits(np, protocol, port, "198.51.100.7"), (protocol, port)
        assert not egress_admits(np, protocol, port), (protocol, port)
    # Signalling (wss, 443) is its own rule: still any address.
    assert egress_admits(np, "TCP", 443, "198.51.100.7")
    media_rules = [r for r in np["spec"]["egress"] if "to" in r]
    assert [r["to"] for r in media_rules] == [
        [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}]
    ]


def test_the_policy_admits_the_local_livekit_servers_ports() -> None:
    """storyteller_devkit.livekit_server runs `livekit-server --dev` on free ports: signalling on `port`,
    ICE over TCP on rtc.tcp_port and all UDP media on one port, rtc.udp_port. A tenant naming them (the
    range narrowed to that one port) is admitted exactly there."""
    from storyteller_devkit.process import free_port

    port, tcp_port, udp_port = free_port(), free_port(), free_port()  # as running_livekit_server picks
    media = {
        "udpPortRangeStart": udp_port,
        "udpPortRangeEnd": udp_port,
        "udpPorts": [],
        "tcpPorts": [tcp_port],
    }
    t = tenant(
        {
            "livekit": {"url": f"ws://127.0.0.1:{port}", "credentialsSecret": "lk"},
            "worker": {"livekitMedia": media},
        }
    )
    np = render.network_policy(t)
    for protocol, p in [("TCP", port), ("TCP", tcp_port), ("UDP", udp_port)]:
        assert egress_admits(np, protocol, p, "127.0.0.1"), (protocol, p)
    assert not egress_admits(np, "UDP", udp_port + 1)
    # One port: a plain port, no endPort (which some CNIs ignore).
    assert all("endPort" not in e for rule in np["spec"]["egress"] for e in rule["ports"])


def test_a_narrowed_udp_range_is_one_port_range() -> None:
    media = {"udpPortRangeStart": 40000, "udpPortRangeEnd": 40100}
    np = render.network_policy(tenant({"worker": {"livekitMedia": media}}))
    assert egress_admits(np, "UDP", 40000) and egress_admits(np, "UDP", 40100)
    assert not egress_admits(np, "UDP", 50000) and not egress_admits(np, "UDP", 40101)
    ranges = [e for rule in np["spec"]["egress"] for e in rule["ports"] if "endPort" in e]
    assert ranges == [{"protocol": "UDP", "port": 40000, "endPort": 40100}]
