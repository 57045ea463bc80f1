"""Vision-LLM judges: `llm_rubric` (the study's seven criteria) and `llm_pairwise` (its "tournament").

Importing this package registers both; the `openai` client and OpenCV are imported only when a judge
first calls out, so `import lora_harness` stays fast.
"""

from lora_harness.judges.llm import pairwise, rubric_judge  # noqa: F401  (register the judges)
from lora_harness.judges.llm.pairwise import LlmPairwiseJudge
from lora_harness.judges.llm.rubric_judge import LlmRubricJudge
from lora_harness.judges.llm.rubrics import CRITERIA, RUBRIC_VERSION

__all__ = ["CRITERIA", "RUBRIC_VERSION", "LlmPairwiseJudge", "LlmRubricJudge"]
