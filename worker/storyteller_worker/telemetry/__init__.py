"""The worker's telemetry: Prometheus metrics from every process, and traces over OTLP.

- `metrics`: the `storyteller_*` metric definitions, their labels and the pod-level recorders;
- `session_metrics`: `SessionMetrics`, which feeds them from one session's events;
- `metrics_dir`: the Prometheus multiprocess directory and the reaper of exited processes' files;
- `metrics_archive`: exited processes' values folded into one archive file per metric family (the
  scrape stays flat over a pod's life), and the collector that reads them under the reaper's lock;
- `tracing`: the tracer provider a job process installs, and the handoff span.

This package's `__init__` must not import prometheus_client: `metrics_dir` is imported before the
multiprocess directory is set.
"""
