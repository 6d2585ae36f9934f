"""Storyteller's Kubernetes operator: StorytellerDeployment → a prewarmed pool of LiveKit agent workers."""

__version__ = "0.1.0"
