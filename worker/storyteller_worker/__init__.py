"""Storyteller's LiveKit Agents worker: the intro → story flow, configured per tenant.

Grouped by concern, as livekit-agents is:
- `config`: `WorkerConfig` / `load_tenant_config`, the tenant config the operator renders;
- `agents/`: the conversation, one module per phase (`intro.IntroAgent`, `story.StoryAgent`), their
  typed userdata (`userdata.StoryData`), the session (`session.build_session(tenant, vad)`) and the job
  entrypoint (`entrypoint.entrypoint`);
- `providers/`: model blocks → LiveKit plugin objects (`plugins`), and each phase's models (`phases`);
- `server/`: the tenant's AgentServer (`tenant_server.build_server(tenant)`), its capacity in sessions,
  its readiness endpoint and what its job processes prewarm;
- `telemetry/`: Prometheus metrics (with the multiprocess directory) and OTLP traces;
- `framework`: the only module that touches livekit-agents' private API.

`python -m storyteller_worker start` runs the worker (`__main__`).
"""
