"""The `lora-harness` command line."""

from lora_harness.cli.main import main

__all__ = ["main"]
