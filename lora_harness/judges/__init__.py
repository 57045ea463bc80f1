"""Judges: import each judge module here so that it registers itself."""

from lora_harness.judges import image_stats  # noqa: F401  (registers "image_stats")
from lora_harness.judges.base import Judge, JudgeContext, Score, create_judge, register, registered_judges

__all__ = ["Judge", "JudgeContext", "Score", "create_judge", "register", "registered_judges"]
