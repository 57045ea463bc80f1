"""lora-harness: evaluation harness and regression gate for person LoRAs."""
