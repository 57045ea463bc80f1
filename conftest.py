"""Repository-level pytest set-up. The lora-harness plugin itself comes from the package's pytest11 entry
point; this file only keeps pytest out of folders that hold data and generated output."""

collect_ignore = ["fixtures", "reports", "benchmarks"]
