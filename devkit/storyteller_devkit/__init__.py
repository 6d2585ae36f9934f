"""Storyteller's development kit: what the tests, the benches and the demo run the platform with.

One module per job:

- ``process``: stop a child process, wait for a condition with a deadline, free ports, HTTP checks.
- ``cluster``: the local control plane (``tests/cluster/*.sh``), its tools, and the :class:`Cluster` handle.
- ``real_node``: the real kubelet node and the images built for it.
- ``real_platform``: the chart installed, tenants applied and polled on a cluster.
- ``livekit_server``: a local ``livekit-server --dev``.
- ``model_server``: the local OpenAI/Deepgram-compatible model server (``model_script`` is its LLM,
  ``speech`` its voice and ears); ``python -m storyteller_devkit.model_server`` runs it alone.
- ``otlp_receiver``: an OTLP trace receiver.
- ``prometheus``: Debian's Prometheus scraping local processes.
- ``tenant_config``: rendered tenant configs pointed at the local model server.
- ``worker_process``: a real worker process; ``operator_process``: the operator as a local process.
- ``session_driver``: a job-process stand-in running sessions in text mode (``python -m``).
- ``caller``: a real LiveKit participant that speaks and listens.

It never imports the tests; the tests' fixtures are thin wrappers around it.
"""
