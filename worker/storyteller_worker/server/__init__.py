"""The tenant's AgentServer: how it is set up, how full it is, when it is ready, what its processes prewarm.

- `tenant_server`: `build_server`, the AgentServer of one tenant (agent name, ports, admission, hooks);
- `capacity`: load counted in session slots, and the AgentServer subclass that reports it;
- `readiness`: `GET :8082/ready`, 200 only while the worker can take a call;
- `prewarm`: what each job process loads before it is idle-ready.
"""
