"""Leader election: one operator replica reconciles and scales; the others watch and wait on a Lease.

Every replica runs kopf (watches, liveness, the recheck loop), but only the holder of a
coordination.k8s.io/v1 Lease in the operator's namespace reconciles: `LeaderGate` turns the others'
triggers into a note that the tenant exists, so a new leader knows every tenant at once. A leader that
loses the Lease stays up: its gate closes (no reconcile starts), its writes are fenced (the operator's Kube
client refuses every write while `holds_lease()` is False, so a reconcile still running cannot write on),
and it is a candidate again like the others; when it leads again it re-applies every tenant.

Why a Lease and this module, not kopf peering or the Kubernetes client's `kubernetes.leaderelection`:
kopf peering pauses operators of a lower priority and freezes every operator when priorities are equal,
which replicas of one Deployment always are (and it needs its own CRDs). The client (37.0.2) ships a
LeaseLock, but its elector times leases on the wall clock, gives its API calls no timeout (a hung renewal
is not bounded by the renew deadline), counts the renew deadline from the pause after a renewal instead of
from the renewal, cannot be stopped or release the Lease on shutdown, and uses the process-wide default
client.
The algorithm and timings are client-go's and small: `Elector` decides (pure, tested with a fake clock),
`LeaseLock` reads and writes the Lease, `LeaderElection` is the thread between them.

The rules:
- A candidate that finds the Lease held by another takes it once the record has not changed for the
  holder's leaseDurationSeconds, timed on its OWN monotonic clock from when it first saw that record (never
  from renewTime: two nodes' clocks differ), with a replace conditional on the resourceVersion it read, so
  of two candidates one wins and the other gets 409 Conflict.
- The holder renews every RETRY_PERIOD_S and counts as leader until RENEW_DEADLINE_S after the START of its
  last successful renewal. A renewal that fails is tried again within the deadline: after the retry period,
  or sooner after a quick refusal (429, 5xx, connection refused; a Retry-After is honoured), each attempt's
  timeout cut so that it ends by the deadline. So a stalled API server (a pause of a few seconds, a burst of
  429s) costs no leadership; only the deadline passing does.
- At the deadline the gate and the write fence close by the clock, whatever the election thread is doing.
  RENEW_DEADLINE_S + REQUEST_TIMEOUT_S < LEASE_DURATION_S: a leader cut off from the API server has stopped
  acting (a write that passed the fence just before has a request's time to land) before any candidate can
  have seen its last renewal expire. A write the API server already holds is beyond any client's reach:
  like client-go, this bets on that margin.
- A lost leader (overdue, or another holder seen) logs "leadership lost" and goes on as a candidate. A
  released Lease (no holder: the leader stopped gracefully) is taken after the 1 s duration the release
  writes; a candidate that finds its own identity there takes it back at once: the restarted container of
  the same pod, or this process after a loss nobody else took over (its conditional replace proves that).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import kubernetes
import urllib3
from kubernetes.client import ApiClient, ApiException

from storyteller_operator import kube, metrics
from storyteller_operator.runner import Key

log = logging.getLogger("storyteller.operator.leadership")

# ------------------------------------------------------------------------------------- the timing
# client-go's. Takeover after a leader dies without releasing: at most LEASE_DURATION_S + RETRY_PERIOD_S
# (the candidate sees the last renewal within one poll, then wakes when it expires) plus one request: about
# 15 s, 19 at most.
LEASE_DURATION_S = 15  # leaseDurationSeconds: how long a candidate waits on an unchanged record
RENEW_DEADLINE_S = 10.0  # a leader that could not renew for this long stops leading
RETRY_PERIOD_S = 2.0  # renewals, a timed-out renewal's retry, and candidates' looks at the Lease
# Each Lease request at most (a leader's less: it must end by the renew deadline). Longer than a stall of
# a few seconds, which then delays a renewal instead of failing it.
REQUEST_TIMEOUT_S = 4.0
FAST_RETRY_S = 0.5  # a leader's next try after a quick refusal (429, 5xx, connection refused)
LAST_TRY_S = 1.0  # a leader's last retry starts at least this long before its deadline
RELEASED_DURATION_S = 1  # what a graceful release writes: the others take the Lease a second later
# On shutdown, how long running reconciles may finish before the Lease is released (never past the renew
# deadline: nothing renews the Lease meanwhile).
DRAIN_S = 10.0

LEASE_API = "/apis/coordination.k8s.io/v1"


def micro_time(at: datetime.datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with exactly six fraction digits, as the API server parses it)."""
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wall_now() -> str:
    return micro_time(datetime.datetime.now(datetime.UTC))


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """A Lease's spec as the election reads it, and the resourceVersion a conditional replace names."""

    holder: str  # "" when released (or never held)
    duration_s: int | None
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str  # "" for a Lease to be created

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_s=spec.get("leaseDurationSeconds"),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"holderIdentity": self.holder or None, "leaseTransitions": self.transitions}
        for key, value in (
            ("leaseDurationSeconds", self.duration_s),
            ("acquireTime", self.acquire_time),
            ("renewTime", self.renew_time),
        ):
            if value is not None:
                out[key] = value
        return out


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A write the elector wants: the record to store (created when its resource_version is "")."""

    record: LeaseRecord
    how: str  # created | renewed | expired (taken over) | released (taken after) | reclaimed | release


class Elector:
    """The election's decisions, pure: what was read, when (a monotonic clock), and what to write.

    Not thread-safe: `LeaderElection` serialises the calls.
    """

    def __init__(self, identity: str) -> None:
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.identity = identity
        self._observed: LeaseRecord | None = None  # the last record read (or written) by this candidate
        self._observed_at = 0.0  # when that record was first seen unchanged
        self._stored: LeaseRecord | None = None  # what our last write as holder stored, while we lead
        self._valid_until = 0.0
        # Counts the spells of leading: a renewal that lands after the deadline starts a new one (the gate
        # was closed meanwhile), which the election reports as a loss and a new start.
        self.term = 0

    # --------------------------------------------------------------------------------- reading state

    def leading(self, now: float) -> bool:
        return self._stored is not None and now < self._valid_until

    def valid_for(self, now: float) -> float:
        """Seconds this replica still leads without another renewal (0 when it does not lead)."""
        return max(self._valid_until - now, 0.0) if self._stored is not None else 0.0

    def overdue(self, now: float) -> bool:
        """Held, but not renewed within the renew deadline: no longer ours to act on."""
        return self._stored is not None and now >= self._valid_until

    @property
    def holder(self) -> str:
        """Who holds the Lease as far as this candidate knows ("" for nobody)."""
        return self._observed.holder if self._observed is not None else ""

    def _duration(self, record: LeaseRecord) -> float:
        return float(record.duration_s) if record.duration_s else float(LEASE_DURATION_S)

    def expires_in(self, now: float) -> float | None:
        """Seconds until the observed record, held by another, may be taken; None when it is not."""
        rec = self._observed
        if rec is None or rec.holder == self.identity or self.leading(now):
            return None
        return self._observed_at + self._duration(rec) - now

    def wait_s(self, now: float, retry_in: float | None = None) -> float:
        """How long to sleep before the next look: a renewal period, or less when a deadline comes first.

        `retry_in`: the last request was refused quickly (429, 5xx, connection refused), try again after
        that long (its Retry-After, or FAST_RETRY_S). A leader does, within its deadline; a candidate is in
        no hurry and only ever waits longer for it.
        """
        if self.leading(now):
            return self._renewal_wait(now, RETRY_PERIOD_S if retry_in is None else retry_in)
        wait = RETRY_PERIOD_S
        expires = self.expires_in(now)
        if expires is not None and 0 < expires < RETRY_PERIOD_S:
            # Wake when the record expires rather than up to a whole period later: a faster takeover.
            wait = expires + 0.01
        return max(wait, retry_in or 0.0)

    def _renewal_wait(self, now: float, wait: float) -> float:
        """`wait`, moved up so the last try before the deadline still has LAST_TRY_S to be answered."""
        last_try = self._valid_until - LAST_TRY_S
        if now <= last_try:
            return min(wait, last_try - now)
        return max(min(wait, self._valid_until - now), 0.0)

    def request_timeout(self, now: float) -> float:
        """How long the next Lease request may take: a leader's ends by its deadline (answered later, a
        renewal could not have kept the gate open); <= 0 when that has passed."""
        if self._stored is None:
            return REQUEST_TIMEOUT_S
        return min(REQUEST_TIMEOUT_S, self._valid_until - now)

    # ------------------------------------------------------------------------------------- deciding

    def observe(self, current: LeaseRecord | None, now: float) -> None:
        """Note what a read of the Lease returned (None: it does not exist)."""
        if current is not None and current.holder != self.identity:
            self._stored = None  # someone else holds it: we do not, whatever we believed
        if current is None:
            if self._observed is not None and self._observed.resource_version:
                # Deleted under a holder that may still be acting: wait out its duration before creating.
                self._observed = dataclasses.replace(self._observed, resource_version="")
            return
        if self._observed is None or current.resource_version != self._observed.resource_version:
            self._observed, self._observed_at = current, now

    def attempt(self, current: LeaseRecord | None, now: float, wall: str) -> Attempt | None:
        """After `observe(current, now)`: the write to make, or None to wait."""
        me = self.identity
        if current is None:
            seen = self._observed
            held = seen is not None and seen.holder not in ("", me)
            if held and seen is not None and now - self._observed_at < self._duration(seen):
                return None  # deleted under a holder that may still be acting: wait its duration out
            return Attempt(LeaseRecord(me, LEASE_DURATION_S, wall, wall, 0, ""), "created")
        if current.holder == me:
            if self._stored is not None:
                return Attempt(self._renewed(current, wall), "renewed")
            # Our identity, but not our write: this pod's previous process, which is gone.
            return Attempt(dataclasses.replace(self._renewed(current, wall), acquire_time=wall), "reclaimed")
        if now - self._observed_at < self._duration(current):
            return None
        taken = LeaseRecord(
            me, LEASE_DURATION_S, wall, wall, current.transitions + 1, current.resource_version
        )
        return Attempt(taken, "released" if current.holder == "" else "expired")

    def renewal(self, wall: str) -> Attempt | None:
        """The leader's renewal of what it stored last, conditional on that version (no read first)."""
        if self._stored is None:
            return None
        return Attempt(self._renewed(self._stored, wall), "renewed")

    @staticmethod
    def _renewed(record: LeaseRecord, wall: str) -> LeaseRecord:
        return dataclasses.replace(record, duration_s=LEASE_DURATION_S, renew_time=wall)

    def wrote(self, stored: LeaseRecord, sent: float, answered: float) -> None:
        """A write as holder succeeded; `sent`: when it was sent, `answered`: when its answer came.

        The deadline counts from the sending, not the answer: a candidate can only have seen this version
        after it was stored, which is after we sent it.
        """
        if not self.leading(answered):
            self.term += 1  # not leading until now (or no longer, the gate closed meanwhile): a new spell
        self._stored = stored
        self._observed, self._observed_at = stored, sent
        self._valid_until = sent + RENEW_DEADLINE_S

    def release(self, wall: str) -> Attempt | None:
        """What a graceful stop writes: no holder, a 1 s duration (None when we do not hold it)."""
        if self._stored is None:
            return None
        released = dataclasses.replace(
            self._stored, holder="", duration_s=RELEASED_DURATION_S, acquire_time=wall, renew_time=wall
        )
        return Attempt(released, "release")

    def resigned(self) -> None:
        self._stored = None


# ------------------------------------------------------------------------------------------ the I/O


class LeaseConflict(Exception):
    """Another write came first (409): read the Lease again."""


class LeaseUnavailable(Exception):
    """The Lease could not be read or written (API server unreachable, a timeout, 403): try again later.

    `retry_in`: refused quickly (429, 5xx, connection refused), so worth trying again after that long
    (Retry-After, or FAST_RETRY_S); None when the request hung or a retry would fare no better (403).
    """

    def __init__(self, problem: str, retry_in: float | None = None) -> None:
        super().__init__(problem)
        self.retry_in = retry_in


class Lock(Protocol):
    """The Lease's reads and writes, each within `timeout` seconds; tests pass a fake."""

    def get(self, timeout: float) -> LeaseRecord | None: ...

    def write(self, record: LeaseRecord, timeout: float) -> LeaseRecord: ...


def lease_api_client() -> ApiClient:
    """The election's own client: its own connections (a reconcile storm must not delay a renewal), no
    retries (one attempt, bounded by its timeout, and the loop decides what next) and no write fence."""
    base = kube.load_api_client(pool_size=2)
    config = base.configuration
    config.retries = False
    base.close()  # type: ignore[no-untyped-call]
    return ApiClient(config)


IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def operator_namespace() -> str:
    """Where the Lease lives when not given: the pod's own namespace, else the kubeconfig context's (as
    kubectl would use), else "default"."""
    try:
        with open(IN_CLUSTER_NAMESPACE) as f:
            if namespace := f.read().strip():
                return namespace
    except OSError:
        pass
    try:
        _, active = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


class LeaseLock:
    """One Lease, read and written as plain dicts (like kube.py) with the election's short timeout."""

    def __init__(self, api: ApiClient, namespace: str, name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name

    def _request(self, method: str, path: str, timeout: float, body: Any = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            m, url, hdrs, data, post = self.api.param_serialize(
                method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            resp = self.api.call_api(m, url, hdrs, data, post, _request_timeout=timeout)
            resp.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as err:  # ApiException: a TLS error
            raise LeaseUnavailable(f"{type(err).__name__}: {err}", _retry_in(err)) from err
        if resp.status == 409 or (resp.status == 404 and method == "PUT"):
            # Another write came first, or the Lease was deleted: read it again (and create it if gone).
            raise LeaseConflict(self.name)
        if resp.status == 404 and method == "GET":
            return {}
        if not 200 <= resp.status <= 299:
            refused = ApiException(http_resp=resp)  # not from_response(), which raises it
            raise LeaseUnavailable(kube.error_text(refused), _retry_after(resp.status, resp.headers))
        result: dict[str, Any] = json.loads(resp.data or b"{}")
        return result

    def _path(self, name: str | None = None) -> str:
        path = f"{LEASE_API}/namespaces/{self.namespace}/leases"
        return f"{path}/{name}" if name else path

    def get(self, timeout: float) -> LeaseRecord | None:
        obj = self._request("GET", self._path(self.name), timeout)
        return LeaseRecord.from_object(obj) if obj else None

    def write(self, record: LeaseRecord, timeout: float) -> LeaseRecord:
        """Create the Lease (record.resource_version "") or replace it if it is still that version."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
        body["spec"] = record.spec()
        if not record.resource_version:
            return LeaseRecord.from_object(self._request("POST", self._path(), timeout, body))
        metadata["resourceVersion"] = record.resource_version
        return LeaseRecord.from_object(self._request("PUT", self._path(self.name), timeout, body))


def _retry_in(err: Exception) -> float | None:
    """No answer: soon again when the connection was refused or cut (nothing listening yet, a restart);
    None after a timeout (its time is spent: the next try waits the retry period) or a TLS error."""
    if isinstance(err, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError, yet refused at once
        return FAST_RETRY_S
    if isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError | ApiException):
        return None
    return FAST_RETRY_S


def _retry_after(status: int, headers: Mapping[str, str] | None) -> float | None:
    """An answer refusing the request: 429 and 5xx are worth a quick retry (after Retry-After when it
    says, in seconds); any other (403: RBAC) would fare no better before the retry period."""
    if status != 429 and status < 500:
        return None
    try:
        after = float((headers or {}).get("Retry-After") or 0)
    except ValueError:  # an HTTP date: the API server sends seconds
        after = 0.0
    return max(after, FAST_RETRY_S)


# --------------------------------------------------------------------------------------- the thread


class LeaderElection:
    """Runs the election on its own thread; `leading()` is the gate every reconcile passes, `holds_lease()`
    the fence every write passes.

    `on_started(how)` runs on the election thread each time this replica becomes leader (again) and must
    not block. Losing the Lease needs no callback: the gate and the fence close by themselves.
    """

    def __init__(
        self,
        lock: Lock,
        identity: str,
        *,
        on_started: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = wall_now,
    ) -> None:
        self.lock = lock
        self.elector = Elector(identity)
        self._on_started = on_started
        self._clock = clock
        self._wall = wall
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._resigning = False
        self._was_leading = False
        self._term = 0  # the elector's term last reported
        self._reread = False  # a conditional write lost: read before the next one
        self._retry_in: float | None = None  # the last request was refused quickly: retry after this
        self._last_problem = ""
        self._followed = ""  # the holder last logged
        self._thread: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return self.elector.identity

    def leading(self) -> bool:
        """The gate: a reconcile may start (never while resigning)."""
        with self._guard:
            return not self._resigning and self.elector.leading(self._clock())

    def holds_lease(self) -> bool:
        """The write fence: the Lease is surely still ours (also while resigning, so that running reconciles
        can finish before it is released)."""
        with self._guard:
            return self.elector.leading(self._clock())

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        log.info("leader election", extra={"identity": self.identity, "lease_duration_s": LEASE_DURATION_S})
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # a bug must not end the election: the leader would keep going unrenewed
                log.exception("leader election step failed")
            self._stop.wait(self.next_wait())

    def next_wait(self) -> float:
        """Seconds until the next step: none after a lost conditional write, else the elector's pace."""
        with self._guard:
            return 0.0 if self._reread else self.elector.wait_s(self._clock(), self._retry_in)

    def step(self) -> None:
        """One look at the Lease: renew it, take it, or wait; then report a change of leadership."""
        started = self._clock()
        attempt: Attempt | None = None
        with self._guard:
            if self._resigning:
                return
            if self.elector.overdue(started):
                # Not renewed within the deadline: lost, even if a renewal would pass now (the gate and the
                # fence closed at the deadline). From here a candidate like the others.
                self.elector.resigned()
            elif not self._reread:
                attempt = self.elector.renewal(self._wall())
        attempt = self._look(attempt)
        self._report(attempt.how if attempt else "")

    def _timeout(self) -> float:
        with self._guard:
            return self.elector.request_timeout(self._clock())

    def _look(self, renewal: Attempt | None) -> Attempt | None:
        """Renew (the leader: one conditional write), or read the Lease and maybe write; the write made."""
        attempt = renewal
        try:
            if attempt is None:
                current = self.lock.get(self._timeout())
                # Seen once the answer is here, not when asked: the holder may have renewed while the read
                # was under way, and its lease must not look older than it is.
                seen = self._clock()
                with self._guard:
                    self.elector.observe(current, seen)
                    attempt = self.elector.attempt(current, seen, self._wall())
            self._reread = False
            if attempt is not None:
                sent = self._clock()
                timeout = self._timeout()
                if timeout <= 0:  # the read took the leader's last moment: the next step finds it overdue
                    return None
                stored = self.lock.write(attempt.record, timeout)
                with self._guard:
                    self.elector.wrote(stored, sent, self._clock())
            self._problem("", None)
            return attempt
        except LeaseConflict:
            self._reread = True
            log.debug("lease conflict", extra={"identity": self.identity})
        except LeaseUnavailable as err:
            self._problem(str(err), err.retry_in)
        return None

    def _problem(self, problem: str, retry_in: float | None) -> None:
        self._retry_in = retry_in
        # Once per distinct problem: a missing RBAC rule must not print a line every two seconds.
        if problem and problem != self._last_problem:
            log.warning("lease unavailable", extra={"identity": self.identity, "error": problem[:500]})
        self._last_problem = problem

    def _report(self, how: str) -> None:
        with self._guard:
            if self._resigning:
                return  # stopping, not losing: resign() says what happens to the Lease
            leading = self.elector.leading(self._clock())
            was, self._was_leading = self._was_leading, leading
            # Leading now and before, but the gate closed in between: overdue and taken back in one step,
            # or a renewal answered after the deadline. Reported as a loss and a new start (a takeover).
            again = leading and was and self.elector.term != self._term
            self._term = self.elector.term
            holder = self.elector.holder
            followed, self._followed = self._followed, holder
        if not leading and not was and holder and holder != followed:
            log.info("following", extra={"identity": self.identity, "holder": holder})
        if was and (again or not leading):
            metrics.OPERATOR_LEADER.set(0)
            log.error(
                "leadership lost",
                extra={"identity": self.identity, "holder": holder, "renew_deadline_s": RENEW_DEADLINE_S},
            )
        if leading and (again or not was):
            metrics.OPERATOR_LEADER.set(1)
            log.info("leading", extra={"identity": self.identity, "how": how})
            self._on_started(how)

    def resign(self, drain: Callable[[float], bool], drain_s: float = DRAIN_S) -> bool:
        """Stop taking part; when leading, let running reconciles finish (`drain`) and release the Lease
        so another replica takes over within a second. True when it was released."""
        with self._guard:
            self._resigning = True  # leading() is False from here: no reconcile starts any more
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 1)
        with self._guard:
            # Only while the Lease is surely ours: once the renew deadline has passed (nothing renews it
            # now), a candidate may soon take it, and the fence stops whatever still runs.
            valid_s = self.elector.valid_for(self._clock())
        metrics.OPERATOR_LEADER.set(0)
        if valid_s <= 0:
            return False
        if not drain(min(drain_s, valid_s)):
            # A reconcile still writing: releasing now could let another replica write alongside it.
            log.warning("lease not released: reconciles still running", extra={"identity": self.identity})
            return False
        with self._guard:
            attempt = self.elector.release(self._wall()) if self.elector.leading(self._clock()) else None
            self.elector.resigned()
        if attempt is None:
            return False
        try:
            self.lock.write(attempt.record, REQUEST_TIMEOUT_S)
        except (LeaseConflict, LeaseUnavailable) as err:
            log.warning("lease not released", extra={"identity": self.identity, "error": str(err)[:500]})
            return False
        log.info("lease released", extra={"identity": self.identity})
        return True


# ----------------------------------------------------------------------------------------- the gate


class Reconciles(Protocol):
    """What the gate passes on to (the Reconciler's face towards the kopf handlers)."""

    def touch(self, namespace: str, name: str) -> None: ...

    def known(self) -> list[Key]: ...

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]: ...

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None: ...

    def submit(self, namespace: str, name: str, *, force_apply: bool) -> None: ...

    def note_tenant(self, namespace: str, name: str, obj: Mapping[str, Any] | None) -> list[Key]: ...

    def forget(self, namespace: str, name: str, uid: str | None) -> None: ...

    def forget_child(self, uid: str, kind: str, name: str) -> None: ...

    def seen(self, obj: Mapping[str, Any]) -> None: ...


class LeaderGate:
    """The reconciler as the kopf handlers and the recheck loop see it: reconciles only while leading.

    A follower's triggers only note the tenant (`touch`), so when it becomes leader `take_over` re-applies
    every tenant it has seen, and the recheck loop finds nothing due. Everything else passes through: a
    follower keeps its tenant list and agent names current, and forgets deleted tenants.
    """

    def __init__(self, reconciler: Reconciles, leading: Callable[[], bool], workers: int = 8) -> None:
        self.reconciler = reconciler
        self.leading = leading
        self.workers = workers
        self._running = 0
        self._idle = threading.Condition()

    def trigger(self, namespace: str, name: str, *, force_apply: bool) -> None:
        with self._idle:
            # Checked and counted under one lock: `drain` then sees every reconcile that passed the gate.
            if not self.leading():
                self.reconciler.touch(namespace, name)
                return
            self._running += 1
        try:
            self.reconciler.trigger(namespace, name, force_apply=force_apply)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def submit(self, namespace: str, name: str, *, force_apply: bool) -> None:
        """`trigger` without waiting (watch events): the reconciler's pool runs it, and checks leadership
        again before it starts (`Runner.may_run`); the write fence covers one that runs across a loss."""
        if not self.leading():
            self.reconciler.touch(namespace, name)
            return
        self.reconciler.submit(namespace, name, force_apply=force_apply)

    def due(self, resync_seconds: float) -> list[tuple[Key, bool]]:
        return self.reconciler.due(resync_seconds) if self.leading() else []

    def drain(self, timeout_s: float) -> bool:
        """Wait until no reconcile that passed the gate is running; False if some still are."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout_s)

    def take_over(self) -> None:
        """Just became leader: re-apply every known tenant in full, on a pool of its own, in the background
        (the caller is the election thread). Those the watches report later are triggered by their events."""

        def run() -> None:
            keys = self.reconciler.known()
            log.info("taking over", extra={"tenants": len(keys)})
            with ThreadPoolExecutor(max(1, self.workers // 2), thread_name_prefix="takeover") as pool:
                for key in keys:
                    pool.submit(self._force, key)

        threading.Thread(target=run, name="takeover", daemon=True).start()

    def _force(self, key: Key) -> None:
        try:
            self.trigger(*key, force_apply=True)
        except Exception:  # Runner.trigger logs a failed reconcile; this catches anything that escapes it
            log.exception("takeover reconcile failed", extra={"namespace": key[0], "tenant": key[1]})

    # Passed through: bookkeeping that writes nothing to the cluster.
    def touch(self, namespace: str, name: str) -> None:
        self.reconciler.touch(namespace, name)

    def known(self) -> list[Key]:
        return self.reconciler.known()

    def note_tenant(self, namespace: str, name: str, obj: Mapping[str, Any] | None) -> list[Key]:
        return self.reconciler.note_tenant(namespace, name, obj)

    def forget(self, namespace: str, name: str, uid: str | None) -> None:
        self.reconciler.forget(namespace, name, uid)

    def forget_child(self, uid: str, kind: str, name: str) -> None:
        self.reconciler.forget_child(uid, kind, name)

    def seen(self, obj: Mapping[str, Any]) -> None:
        self.reconciler.seen(obj)
