"""The model providers: the tenant config's model blocks become LiveKit plugin objects.

- `plugins`: one block (with its fallbacks) → an LLM, STT or TTS plugin, or a fallback adapter over several;
- `phases`: each conversation phase's models (`PhaseModels`), both phases built ahead (`SessionModels`).
"""
