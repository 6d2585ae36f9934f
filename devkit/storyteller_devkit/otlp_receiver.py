"""An OTLP/gRPC trace receiver (the collector's wire protocol) that keeps what it receives.

Built on the generated OTLP service of `opentelemetry-proto` and grpcio, both already installed with
the OTLP exporter: the worker's real exporter talks to it exactly as to an OpenTelemetry Collector.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from storyteller_devkit.process import wait_until


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    trace_id: str
    span_id: str = ""
    parent_span_id: str = ""  # "" for a trace's root
    # Unix seconds: when the span started and ended, and when each of its events happened (the first of a
    # name), for timelines that line the worker's clock up with a test's (the same machine's).
    start_s: float = 0.0
    end_s: float = 0.0
    event_times: dict[str, float] = field(default_factory=dict)


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                            events=[
                                (e.name, {kv.key: _value(kv.value) for kv in e.attributes})
                                for e in span.events
                            ],
                            resource=resource,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_s=span.start_time_unix_nano / 1e9,
                            end_s=span.end_time_unix_nano / 1e9,
                            event_times={e.name: e.time_unix_nano / 1e9 for e in reversed(span.events)},
                        )
                    )
        with self._receiver._lock:
            self._receiver._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """`start()` binds 127.0.0.1 on a free port; `.endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # The generated gRPC module is untyped.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Service(self), self._server
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1).wait()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, name: str, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans called `name`, once at least one arrived; raises WaitFailed at the deadline."""
        return wait_until(
            f"a span {name!r}",
            lambda: [s for s in self.spans if s.name == name],
            timeout,
            every=0.05,
            context=lambda: f"spans received: {sorted({s.name for s in self.spans})}",
        )
