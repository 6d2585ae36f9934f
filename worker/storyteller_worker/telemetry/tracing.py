"""Traces over OTLP: the tracer provider a job process installs through the framework's telemetry hook.

The exporter is configured by the standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `..._PROTOCOL`, `..._HEADERS`, `..._INSECURE`, ...), which the
operator sets from `observability.tracing`; the config's `otlpEndpoint` is the fallback when none is set.
No endpoint at all means no tracing: the framework's spans then go to its no-op provider.

Conversation content (the user's words, the model's replies, tool arguments) is stripped before export
unless the tenant sets `tracing.captureContent`: the framework's PII filter drops those attributes
in-process. Keys never reach a span: the plugins read them from the environment, nothing here passes them.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
from collections.abc import Mapping
from typing import Any

from livekit.agents import telemetry
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from storyteller_api.spec import WorkerConfig

logger = logging.getLogger("storyteller.worker.tracing")

SERVICE_NAME = "storyteller-worker"
# The pod's identity comes from the downward API (POD_NAME, POD_NAMESPACE); HOSTNAME is the pod name too.
POD_NAME_ENVS = ("POD_NAME", "HOSTNAME")
POD_NAMESPACE_ENV = "POD_NAMESPACE"


def otlp_endpoint(tenant: WorkerConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The endpoint in force: the standard variables first, then the tenant config."""
    return (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or tenant.observability.tracing.otlp_endpoint
    )


def resource_attributes(tenant: WorkerConfig, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    pod = next((environ[name] for name in POD_NAME_ENVS if environ.get(name)), "unknown")
    return {
        "service.name": SERVICE_NAME,
        "storyteller.tenant": tenant.tenant,
        "k8s.namespace.name": environ.get(POD_NAMESPACE_ENV) or tenant.namespace,
        "k8s.pod.name": pod,
    }


def _exporter(tenant: WorkerConfig, environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    # The exporters read the OTEL_EXPORTER_OTLP_* variables themselves (headers, timeout, TLS);
    # the endpoint is passed only when it comes from the config.
    from_env = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    kwargs: dict[str, Any] = {}
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        if not from_env and tenant.observability.tracing.otlp_endpoint:
            kwargs["endpoint"] = tenant.observability.tracing.otlp_endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(**kwargs)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    if not from_env and tenant.observability.tracing.otlp_endpoint:
        kwargs["endpoint"] = tenant.observability.tracing.otlp_endpoint
    return GrpcExporter(**kwargs)


def build_tracer_provider(
    tenant: WorkerConfig, environ: Mapping[str, str] = os.environ, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """The tenant's provider, or None when no OTLP endpoint is configured (and no exporter given)."""
    if exporter is None:
        if not otlp_endpoint(tenant, environ):
            return None
        exporter = _exporter(tenant, environ)
    ratio = tenant.observability.tracing.sample_ratio
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES; the attributes given here win.
    provider = TracerProvider(
        resource=Resource.create(resource_attributes(tenant, environ)),
        sampler=ParentBased(TraceIdRatioBased(ratio)),  # a sampled session keeps all its spans
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def install_tracing(
    tenant: WorkerConfig, environ: Mapping[str, str] = os.environ, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Build the provider and hand it to the framework (in the job process, before the session)."""
    provider = build_tracer_provider(tenant, environ, exporter=exporter)
    if provider is None:
        logger.debug("tracing off: no OTLP endpoint")
        return None
    telemetry.set_tracer_provider(
        provider,
        metadata={"storyteller.tenant": tenant.tenant},
        # False strips conversation content before every exporter; only an opted-in tenant sends it.
        allow_pii=tenant.observability.tracing.capture_content,
    )
    # The framework ends the job's root span (`job_entrypoint`, with the dispatch timeline) and
    # `job_shutdown` after the session's shutdown callbacks, and a job process leaves through
    # multiprocessing's exit, which skips atexit: flush there, or those spans are never sent.
    multiprocessing.util.Finalize(provider, provider.shutdown, exitpriority=10)
    logger.info(
        "tracing on",
        extra={
            "sample_ratio": tenant.observability.tracing.sample_ratio,
            "endpoint": otlp_endpoint(tenant, environ),
        },
    )
    return provider


def record_handoff_span(tenant: str, from_agent: str, to_agent: str) -> None:
    """A short span naming both agents, under the tool call that hands off (ended at once)."""
    with telemetry.tracer.start_as_current_span(
        "agent_handoff",
        attributes={
            "storyteller.tenant": tenant,
            "storyteller.handoff.from_agent": from_agent,
            "storyteller.handoff.to_agent": to_agent,
        },
    ):
        pass
