"""Watch-backed caches: one kind's objects kept current by list + watch, so reconciles read memory.

client-go's reflector and store, reduced to what the operator needs: list (paged), then watch from the
list's resourceVersion with bookmarks; a watch that ends is resumed from the last version seen, one the
server has compacted away (410 Gone) starts over with a fresh list. Objects are kept without
`metadata.managedFields` (the largest part of most objects, never read here). A kind may be kept as
metadata only (PartialObjectMetadata: Secrets, whose key material must never enter the operator).

Reads come from memory once the first list is in (`synced`); until then, and for good if listing is
forbidden (RBAC granting `get` but not `list`/`watch`), `cached.py` reads from the API server instead.

What this process writes is put into the cache at once from the write's answer (client-go's mutation
cache), so the reconcile that follows its own write does not act on the version before it. Versions are
compared as integers, as client-go's integer mutation cache does: a late watch event never replaces a
newer object.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kubernetes.client import ApiClient, ApiException

from storyteller_operator.kube import request_labels
from storyteller_operator.metrics import API_REQUESTS

log = logging.getLogger("storyteller.operator.informer")

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

LIST_PAGE = 500
WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed from the last version
READ_MARGIN_S = 30.0  # a watch that says nothing (not even a bookmark) for this much longer is dead
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class Gone(Exception):
    """The version a watch resumes from is no longer kept by the server (410): list again."""


def version_of(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def slim(obj: Obj, *, metadata_only: bool = False) -> Obj:
    """What is kept of an object: everything but managedFields. Of an object kept as metadata, its
    annotations go too: `kubectl apply` copies a whole Secret, keys and all, into one of them."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        if metadata_only:
            meta.pop("annotations", None)
    return obj


def parse_selector(selector: str) -> dict[str, str]:
    """A `k=v,k2=v2` label selector (the only form the operator uses) as a mapping."""
    out = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        if not sep or "!" in key:
            raise ValueError(f"only equality selectors are supported: {term!r}")
        out[key.strip()] = value.lstrip("=").strip()
    return out


def matches(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


# How long a deleted object's version is remembered: far longer than any request that could answer with it.
TOMBSTONE_S = 300.0


class Store:
    """Objects by (namespace, name), indexed by (namespace, one label's value). Thread-safe."""

    def __init__(self, index_label: str = "", *, clock: Callable[[], float] = time.monotonic) -> None:
        self._index_label = index_label
        self._objects: dict[Key, Obj] = {}
        # Deleted objects' last versions, and when: a write's answer read after the deletion must not bring
        # one back. Such an answer is a request's, so older ones are forgotten (a namespace's pods come and
        # go for ever: kept, they would grow without bound until the next relist).
        self._deleted: dict[Key, tuple[int, float]] = {}
        self._clock = clock
        self._pruned_at = clock()
        self._index: dict[tuple[str, str], dict[str, Obj]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(obj: Mapping[str, Any]) -> Key:
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def _bucket(self, obj: Mapping[str, Any]) -> tuple[str, str] | None:
        if not self._index_label:
            return None
        meta = obj.get("metadata") or {}
        value = (meta.get("labels") or {}).get(self._index_label)
        return None if value is None else (str(meta.get("namespace") or ""), str(value))

    def _put(self, obj: Obj) -> None:
        key = self.key(obj)
        self._drop(key)
        self._objects[key] = obj
        if (bucket := self._bucket(obj)) is not None:
            self._index.setdefault(bucket, {})[key[1]] = obj

    def _drop(self, key: Key) -> None:
        old = self._objects.pop(key, None)
        if old is not None and (bucket := self._bucket(old)) is not None:
            members = self._index.get(bucket, {})
            members.pop(key[1], None)
            if not members:
                self._index.pop(bucket, None)

    def replace(self, objects: Iterable[Obj]) -> None:
        with self._lock:
            self._objects, self._index, self._deleted = {}, {}, {}
            for obj in objects:
                self._put(obj)

    def upsert(self, obj: Obj) -> bool:
        """Keep `obj` unless a newer version of it is kept already; whether it was kept."""
        key, version = self.key(obj), version_of(obj)
        with self._lock:
            current = self._objects.get(key)
            if current is not None and version_of(current) > version:
                return False
            deleted = self._deleted.get(key)
            if deleted is not None and version <= deleted[0]:
                return False
            self._deleted.pop(key, None)
            self._put(obj)
            return True

    def delete(self, obj: Mapping[str, Any]) -> None:
        key = self.key(obj)
        now = self._clock()
        with self._lock:
            self._drop(key)
            self._deleted[key] = (version_of(obj), now)
            if now - self._pruned_at >= TOMBSTONE_S:
                self._deleted = {k: d for k, d in self._deleted.items() if now - d[1] < TOMBSTONE_S}
                self._pruned_at = now

    def tombstones(self) -> int:
        with self._lock:
            return len(self._deleted)

    def get(self, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def select(self, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
        with self._lock:
            if self._index_label and self._index_label in labels:
                members = self._index.get((namespace, labels[self._index_label]), {})
                candidates: Iterable[Obj] = list(members.values())
            else:
                candidates = [o for (ns, _), o in self._objects.items() if ns == namespace]
        return [o for o in candidates if matches(o, labels)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)


class Informer:
    """One kind (a collection path such as `/api/v1/secrets`, or one namespace's) kept in a Store.

    `path`: the collection's URL without the namespace part, `namespace`: "" for all namespaces.
    Call `start()`; `synced` is set once the first list is in, `forbidden` when listing is not allowed.
    """

    def __init__(
        self,
        api: ApiClient,
        prefix: str,
        plural: str,
        *,
        namespace: str = "",
        label_selector: str = "",
        metadata_only: bool = False,
        index_label: str = "",
        on_change: Callable[[str, Obj], None] | None = None,
    ) -> None:
        self.api = api
        self.path = f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self.metadata_only = metadata_only
        self.store = Store(index_label)
        self.on_change = on_change  # (event type, object), after the store has it; must not block
        self.synced = threading.Event()
        self.forbidden = False
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.relists = 0  # how often the whole collection was listed (1 in a quiet steady state)

    def __repr__(self) -> str:
        return f"Informer({self.path}{'?' + self.label_selector if self.label_selector else ''})"

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> Informer:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.plural}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._break_watch()

    def _break_watch(self) -> None:
        """End the open watch at once, as a dropped connection would (its thread resumes unless stopped).

        Closing the response is not enough: it waits for the buffer lock the watch's blocked read holds
        until the server next sends something (a bookmark: up to a minute). Shutting the socket down wakes
        that read; a half-dead connection may fail to shut down, and the thread ends anyway."""
        response = self._response
        if response is None:
            return
        sock = getattr(getattr(response, "connection", None), "sock", None)  # urllib3's HTTPResponse
        with contextlib.suppress(Exception):
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            else:
                response.close()

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    # ------------------------------------------------------------------------------------------ I/O

    def _call(self, query: list[tuple[str, str]], *, stream: bool, timeout: Any) -> Any:
        accept = (METADATA_OBJECT if stream else METADATA_LIST) if self.metadata_only else "application/json"
        if self.label_selector:
            query = [*query, ("labelSelector", self.label_selector)]
        method, url, headers, body, post = self.api.param_serialize(
            "GET",
            self.path,
            query_params=query,
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        API_REQUESTS.labels(*request_labels("GET", self.path, watch=stream)).inc()
        # The generated client leaves the body unread (urllib3's preload_content=False): a watch streams it.
        response = self.api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        if stream:
            raw = response.response
            if not 200 <= raw.status <= 299:
                response.read()  # type: ignore[no-untyped-call]
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            return raw
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return json.loads(response.data or b"{}")

    def _list(self) -> str:
        """List everything into the store; the collection's resourceVersion to watch from."""
        items: list[Obj] = []
        token = ""
        while True:
            query = [("limit", str(LIST_PAGE))]
            if token:
                query.append(("continue", token))
            page = self._call(query, stream=False, timeout=60.0)
            items.extend(slim(i, metadata_only=self.metadata_only) for i in page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                break
        self.store.replace(items)
        self.relists += 1
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def _lines(self, response: Any) -> Iterator[bytes]:
        pending = bytearray()
        for chunk in response.stream(amt=None, decode_content=True):
            pending.extend(chunk)
            start = 0
            while (end := pending.find(b"\n", start)) != -1:
                if end > start:
                    yield bytes(pending[start:end])
                start = end + 1
            del pending[:start]
        if pending.strip():
            yield bytes(pending)

    def _watch(self, version: str) -> str:
        """Apply the watch's events until the server ends it; the last version seen."""
        query = [
            ("watch", "1"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(WATCH_SECONDS)),
        ]
        response = self._call(query, stream=True, timeout=(10.0, WATCH_SECONDS + READ_MARGIN_S))
        self._response = response
        try:
            for line in self._lines(response):
                if self._stop.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", ""))
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message", ""))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                slim(obj, metadata_only=self.metadata_only)
                if kind == "DELETED":
                    self.store.delete(obj)
                elif not self.store.upsert(obj):
                    continue
                if self.on_change is not None:
                    try:
                        self.on_change(str(kind), obj)
                    except Exception:  # a listener's bug must not stop the cache
                        log.exception("informer listener failed", extra={"path": self.path})
        finally:
            self._response = None
            response.release_conn()
        return version

    def _run(self) -> None:
        delay = RETRY_MIN_S
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version)
                delay = RETRY_MIN_S
            except Gone:
                log.info("watch version expired, listing again", extra={"path": self.path})
                version = ""
            except ApiException as err:
                if err.status in (401, 403) and not self.synced.is_set():
                    # Without list/watch rights every read goes to the API server (see cached.py).
                    self.forbidden = True
                    log.warning(
                        "cannot list and watch: reading on demand instead",
                        extra={"path": self.path, "status": err.status},
                    )
                    return
                if err.status == 410:
                    version = ""
                    continue
                log.warning(
                    "watch failed", extra={"path": self.path, "status": err.status, "retry_in_s": delay}
                )
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as err:  # connection reset, read timeout: resume from the last version seen
                if self._stop.is_set():
                    return
                log.info(
                    "watch interrupted",
                    extra={"path": self.path, "error": f"{type(err).__name__}: {err}"[:300]},
                )
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
