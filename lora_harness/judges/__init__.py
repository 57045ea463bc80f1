"""Judges: import each judge module here so that it registers itself."""

from lora_harness.judges import image_stats  # noqa: F401  (registers "image_stats")
from lora_harness.judges import llm  # noqa: F401  (registers "llm_rubric", "llm_pairwise"; openai loads lazily)
# Embedding judges: torch/transformers/dlib are imported only when a judge first scores (lora_harness.judges.model_loading).
from lora_harness.judges import clip_score  # noqa: F401  (registers "clip_score")
from lora_harness.judges import image_similarity  # noqa: F401  (registers "clip_i", "dino")
from lora_harness.judges import face_identity  # noqa: F401  (registers "face_identity")
from lora_harness.judges import pixel_similarity  # noqa: F401  (registers "pixel_similarity"; numpy/pillow only)
from lora_harness.judges.base import Judge, JudgeContext, Score, create_judge, metric_direction, register, registered_judges

__all__ = ["Judge", "JudgeContext", "Score", "create_judge", "metric_direction", "register", "registered_judges"]
