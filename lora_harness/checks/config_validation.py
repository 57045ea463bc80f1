"""Up-front validation of the check sections against the configured judges (a typo must not gate nothing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from lora_harness.core.config import ConfigError, validate_metric_names
from lora_harness.judges import registered_judges

if TYPE_CHECKING:
    from lora_harness.core.config import EvalConfig


def validate_check_sections(config: "EvalConfig", produced: Sequence[str]) -> None:
    if config.leakage is not None:
        validate_metric_names("leakage.metric", [config.leakage.metric], produced)
    if config.strength is not None:
        validate_metric_names("strength.metric", [config.strength.metric], produced)
    memo = config.memorization
    if memo is not None:
        unknown = sorted(set(memo.judges) - set(registered_judges()))
        if unknown:
            raise ConfigError(
                f"memorization.judges names unknown judge(s) {', '.join(unknown)}; registered judges: "
                f"{', '.join(registered_judges())}"
            )
        if not memo.training_dir.is_dir():
            raise ConfigError(
                f"memorization.training_dir {memo.training_dir} is not a folder; point it at the training images "
                "(e.g. kohya's --train_data_dir)"
            )
        if isinstance(memo.max_similarity, dict):
            metrics = [f"{name}_max" for name in memo.judges]
            validate_metric_names("memorization.max_similarity", memo.max_similarity, metrics)
