"""Prometheus series names the platform exports (DESIGN.md's table), for exporters and their readers.

The worker and the operator register their metrics under these names; the dashboards, the alert rules,
KEDA's trigger and the operator's Prometheus session source query them. Counters keep their `_total`.
"""

from __future__ import annotations

from typing import Final

# ----------------------------------------------------------------------------- worker (per tenant)
SESSIONS_STARTED: Final = "storyteller_sessions_started_total"
SESSIONS_ACTIVE: Final = "storyteller_sessions_active"
# Sessions that ended, by the framework's CloseReason (error, task_completed, participant_disconnected...).
SESSIONS_ENDED: Final = "storyteller_sessions_ended_total"
SESSION_DURATION: Final = "storyteller_session_duration_seconds"
HANDOFFS: Final = "storyteller_handoffs_total"
LLM_PROMPT_TOKENS: Final = "storyteller_llm_prompt_tokens_total"
LLM_COMPLETION_TOKENS: Final = "storyteller_llm_completion_tokens_total"
LLM_TTFT: Final = "storyteller_llm_ttft_seconds"
# Of the prompt and completion tokens, those that were audio (a realtime model hears and speaks tokens).
LLM_INPUT_AUDIO_TOKENS: Final = "storyteller_llm_input_audio_tokens_total"
LLM_OUTPUT_AUDIO_TOKENS: Final = "storyteller_llm_output_audio_tokens_total"
# The caller's end of speech to the agent's first audio, per reply: what a caller hears as latency.
TIME_TO_FIRST_AUDIO: Final = "storyteller_time_to_first_audio_seconds"
TTS_CHARACTERS: Final = "storyteller_tts_characters_total"
TTS_AUDIO_SECONDS: Final = "storyteller_tts_audio_seconds_total"
TTS_TTFB: Final = "storyteller_tts_ttfb_seconds"
STT_AUDIO_SECONDS: Final = "storyteller_stt_audio_seconds_total"
EOU_DELAY: Final = "storyteller_eou_delay_seconds"
PROVIDER_ERRORS: Final = "storyteller_provider_errors_total"
SESSION_CAPACITY: Final = "storyteller_worker_session_capacity"

# -------------------------------------------------------------------------------------- operator
RECONCILE_TOTAL: Final = "storyteller_operator_reconcile_total"
RECONCILE_SECONDS: Final = "storyteller_operator_reconcile_seconds"
POOL_DESIRED_REPLICAS: Final = "storyteller_pool_desired_replicas"
POOL_ACTIVE_SESSIONS: Final = "storyteller_pool_active_sessions"
POOL_MAX_REPLICAS: Final = "storyteller_pool_max_replicas"
# 1 while a tenant's newest revision stands rolled back by its canary analysis (until the spec changes).
CANARY_FAILED: Final = "storyteller_canary_failed"
# Requests the operator sent the API server, by verb (GET, LIST, WATCH, PATCH...) and resource: in a steady
# state only the watches' renewals and real changes.
OPERATOR_API_REQUESTS: Final = "storyteller_operator_api_requests_total"
# 1 on the replica that holds the leader Lease (the one that reconciles), 0 on the others.
OPERATOR_LEADER: Final = "storyteller_operator_leader"

# The recording rule of the cost panels' price table (dashboards/rules.yaml).
PRICE_PER_UNIT: Final = "storyteller:price_usd_per_unit"
