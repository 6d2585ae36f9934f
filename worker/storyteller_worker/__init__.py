"""Storyteller's LiveKit Agents worker: the intro → story flow, configured per tenant.

Public surface (what the operator, the tests and users rely on):
- `storyteller_worker.config.TenantConfig` / `load_tenant_config`: the tenant config the operator renders;
- `storyteller_worker.agents.IntroAgent(tenant)`, `StoryAgent`, `StoryData`: the conversation phases;
- `storyteller_worker.session.build_session(tenant, vad)`: the `AgentSession[StoryData]` of one session;
- `storyteller_worker.server.build_server(tenant)`: the AgentServer; `python -m storyteller_worker start`.
"""
