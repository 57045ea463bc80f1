"""Regression gates of the eval suite: stored score snapshots and the paired comparison with a baseline.

`pytest evals --snapshot-update` stores each gated checkpoint's aggregate scores under `__snapshots__/`;
later runs fail when a metric mean drops beyond its `[snapshot]` tolerance. `test_baseline` runs once per
gated candidate checkpoint and metric when `[baseline]` is configured, and is skipped (saying so) otherwise.
`test_pairwise` runs when an `llm_pairwise` judge is configured (a vision-LLM endpoint), else skips saying how.
"""


def test_snapshot(lora_checkpoint_summary, snapshot_lora):
    """The gated checkpoint's metric means are within tolerance of the stored snapshot."""
    assert snapshot_lora == lora_checkpoint_summary


def test_baseline(lora_baseline_comparison):
    """Non-inferior to the baseline: the paired CI's lower bound is above -margin."""
    lora_baseline_comparison.check()


def test_pairwise(lora_pairwise_comparison):
    """A vision-LLM prefers the candidate at least as often as the baseline (both image orders asked)."""
    lora_pairwise_comparison.check()
