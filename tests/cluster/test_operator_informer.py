"""The operator's watch-backed caches against a real API server: list then watch, label selection,
deletions, Secrets kept as metadata without their keys, a broken watch resumed without a relist, and an
account that may not list.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient
from prometheus_client import REGISTRY

from storyteller_api.metric_names import OPERATOR_API_REQUESTS
from storyteller_devkit.cluster import Cluster
from storyteller_operator.informer import Informer

DEADLINE_S = 30.0
LABEL = "storyteller.dev/informer-test"


def wait_for(what: str, cond: Callable[[], Any], deadline: float = DEADLINE_S) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if got := cond():
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {deadline:g} s: {what}")


@pytest.fixture
def api(cluster: Cluster) -> ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]


@pytest.fixture
def informers() -> Iterator[list[Informer]]:
    started: list[Informer] = []
    yield started
    for informer in started:
        informer.stop()


def config_map(ns: str, name: str, value: str, labels: dict[str, str]) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"v": value},
        }
    )


def watches_sent() -> float:
    """Watches of ConfigMaps this process opened, by the operator's own request counter."""
    got = REGISTRY.get_sample_value(OPERATOR_API_REQUESTS, {"verb": "WATCH", "resource": "configmaps"})
    return got or 0.0


def stored(informer: Informer, ns: str, name: str) -> dict[str, Any] | None:
    return informer.store.get(ns, name)


def test_a_selected_kind_is_listed_then_followed_through_changes_and_deletions(
    cluster: Cluster, namespace: str, api: ApiClient, informers: list[Informer]
) -> None:
    cluster.apply(config_map(namespace, "before", "1", {LABEL: "yes"}))
    cluster.apply(config_map(namespace, "other", "1", {}))
    informer = Informer(api, "/api/v1", "configmaps", namespace=namespace, label_selector=f"{LABEL}=yes")
    informers.append(informer.start())
    assert informer.wait_synced(DEADLINE_S)
    # The list: the selected one, without its managedFields; the unselected one not at all.
    first = stored(informer, namespace, "before")
    assert first is not None and first["data"] == {"v": "1"} and "managedFields" not in first["metadata"]
    assert stored(informer, namespace, "other") is None

    cluster.apply(config_map(namespace, "after", "1", {LABEL: "yes"}))
    wait_for("a new object", lambda: stored(informer, namespace, "after"))
    cluster.apply(config_map(namespace, "before", "2", {LABEL: "yes"}))
    wait_for("its change", lambda: (stored(informer, namespace, "before") or {}).get("data") == {"v": "2"})
    cluster.kubectl("-n", namespace, "delete", "configmap", "after")
    wait_for("its deletion", lambda: stored(informer, namespace, "after") is None)
    # Leaving the selection is a deletion as far as this watch is concerned.
    cluster.apply(config_map(namespace, "before", "2", {LABEL: "no"}))
    wait_for("a label change out of the selection", lambda: stored(informer, namespace, "before") is None)
    assert informer.relists == 1


def test_a_broken_watch_resumes_from_the_last_version_without_listing_again(
    cluster: Cluster, namespace: str, api: ApiClient, informers: list[Informer]
) -> None:
    informer = Informer(api, "/api/v1", "configmaps", namespace=namespace)
    informers.append(informer.start())
    assert informer.wait_synced(DEADLINE_S)
    cluster.apply(config_map(namespace, "one", "1", {}))
    wait_for("the first object", lambda: stored(informer, namespace, "one"))
    watches = watches_sent()
    wait_for("the watch to be open", lambda: informer._response is not None)
    informer._break_watch()  # as a dropped connection would
    wait_for("a new watch", lambda: watches_sent() > watches)
    cluster.apply(config_map(namespace, "two", "1", {}))
    wait_for("an object created after the break", lambda: stored(informer, namespace, "two"))
    assert informer.relists == 1


def test_secrets_are_kept_as_metadata_without_their_keys(
    cluster: Cluster, namespace: str, api: ApiClient, informers: list[Informer]
) -> None:
    key = "sk-informer-test-0123456789"
    manifest = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "openai", "namespace": namespace},
            "stringData": {"OPENAI_API_KEY": key},
        }
    )
    # kubectl apply: the last-applied annotation then holds the key too.
    cluster.kubectl("apply", "-f", "-", input=manifest)
    informer = Informer(api, "/api/v1", "secrets", namespace=namespace, metadata_only=True)
    informers.append(informer.start())
    assert informer.wait_synced(DEADLINE_S)
    listed = stored(informer, namespace, "openai")
    assert listed is not None and key not in repr(listed) and "data" not in listed
    version = listed["metadata"]["resourceVersion"]
    cluster.kubectl("apply", "-f", "-", input=manifest.replace(key, key + "-rotated"))

    def rotated() -> dict[str, Any] | None:
        o = stored(informer, namespace, "openai")
        return o if o is not None and o["metadata"]["resourceVersion"] != version else None

    watched = wait_for("the rotation", rotated)
    assert key not in repr(watched) and "data" not in watched
    live = cluster.kubectl_json("-n", namespace, "get", "secret", "openai")
    assert watched["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]


def test_stop_ends_an_open_watch_at_once(
    cluster: Cluster, namespace: str, api: ApiClient, informers: list[Informer]
) -> None:
    """A quiet watch blocks in its read until the server sends something (a bookmark: about a minute); stop()
    must not wait for that, or an operator's graceful stop would outlast its pod's grace period."""
    informer = Informer(api, "/api/v1", "configmaps", namespace=namespace)
    informers.append(informer.start())
    assert informer.wait_synced(DEADLINE_S)
    wait_for("the watch to be open", lambda: informer._response is not None)
    stopper = threading.Thread(target=informer.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=10)
    assert not stopper.is_alive(), "stop() waits for the open watch to say something"
    assert informer._thread is not None
    informer._thread.join(timeout=10)
    assert not informer._thread.is_alive(), "the watch thread still reads after stop()"


def test_an_account_that_may_not_list_is_told_apart(
    cluster: Cluster, namespace: str, informers: list[Informer], tmp_path: Path
) -> None:
    account = "no-list"
    cluster.kubectl("-n", namespace, "create", "serviceaccount", account)
    cluster.kubectl(
        "-n", namespace, "create", "role", account, "--verb=get", "--resource=secrets"
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", account, f"--role={account}",
        f"--serviceaccount={namespace}:{account}",
    )  # fmt: skip
    token = cluster.kubectl("-n", namespace, "create", "token", account).stdout.strip()
    server = cluster.kubectl_json("config", "view", "--raw", "--minify")["clusters"][0]["cluster"]
    path = tmp_path / "no-list.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    api = kubernetes.config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    informer = Informer(api, "/api/v1", "secrets", namespace=namespace, metadata_only=True)
    informers.append(informer.start())
    wait_for("listing refused", lambda: informer.forbidden)
    assert not informer.synced.is_set()
