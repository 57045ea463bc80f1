"""LoRA-specific checks beyond per-image scores: trigger leakage, strength sweep, memorization.

Leakage and strength cases are extra generated images (`EvalCase.role` = "leakage" / "strength") stored under
their own LoRA names (`<lora>-leakage`, `<lora>-scale<s>`), so their scores land in the store, the CSV and
the trend plots per training step, but never in the per-image / per-checkpoint thresholds meant for trigger
prompts. Memorization compares the normal cases' images with the training images.
"""
