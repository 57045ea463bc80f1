"""The nouns every layer shares: cases and their order, the eval config, prompts, image decoding, redaction."""
