"""LoRA-specific checks (README: "LoRA-specific checks"): trigger leakage, strength sweep, memorization, diversity.

Each test runs once per checkpoint the config's `[leakage]`, `[strength]` or `[memorization]` section
covers (and `[diversity]`); without the section it is collected once and skipped, saying what to add.
"""


def test_leakage(lora_leakage_check):
    lora_leakage_check.check()


def test_strength(lora_strength_check):
    lora_strength_check.check()


def test_memorization(lora_memorization_check):
    lora_memorization_check.check()


def test_diversity(lora_diversity_check):
    lora_diversity_check.check()
