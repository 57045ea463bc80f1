"""The eval suite: one test per image and one per checkpoint, parametrized from evals/lora_eval.toml.

Run `pytest evals -n auto`. Failing thresholds fail gated checkpoints and are reported as xfail elsewhere.
"""


def test_image(lora_case, lora_gate):
    """Every metric of the image meets its per-image minimum."""
    lora_gate.check_image(lora_case)


def test_checkpoint(lora_checkpoint, lora_gate):
    """The mean of each metric over the checkpoint's prompts and seeds meets its per-checkpoint minimum."""
    lora_gate.check_checkpoint(lora_checkpoint)
