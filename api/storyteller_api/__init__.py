"""The StorytellerDeployment API: typed tenant spec and contract constants (pure: pydantic only)."""
