"""The storyteller conversation: one module per phase, their shared userdata, the session and its entrypoint.

- `userdata`: `StoryData`, what the intro learns and the story uses;
- `intro`: `IntroAgent`, greets and gathers the user's name and location, then hands off;
- `story`: `StoryAgent`, tells the story, says goodbye and deletes the room;
- `session`: `build_session`, the `AgentSession[StoryData]` of one conversation;
- `entrypoint`: `entrypoint`, the job entrypoint that runs one conversation in its room.
"""
