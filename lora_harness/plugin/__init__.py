"""The pytest plugin of lora-harness, registered through the `pytest11` entry point.

Active in every pytest run of an environment that installs the package, and inert until a test asks for a
lora fixture (`lora_case`, `lora_checkpoint`, ...). Hooks stay thin; the logic lives in plain modules
(run/, verdicts/, report/) that unit tests call directly. One module per role, in the order of a session:

- options:        `--lora-*` options, pytest_configure (the per-process state of state.py)
- collection:     what each lora fixture is parametrized over; config errors deselect (exit code 4)
- xdist_hooks:    run id to workers, checkpoint-scoped scheduling (xdist_scheduler), results back
- selection:      `--lora-shard`, progress tags
- fixtures, check_fixtures: what eval tests use
- reporting, attachments: verdicts, JUnit properties, progress line, thumbnails, allure
- session_end:    CSVs, run.json, report.html, Markdown summary
- terminal:       the checkpoint table and the run's verdict line (terminal_table formats it)
"""

# A module is listed after every listed module it imports: pytest marks each for assertion rewriting just
# before importing it, and warns when an earlier one already imported it (tests/test_import_boundaries.py checks).
pytest_plugins = [
    "lora_harness.plugin.reporting",
    "lora_harness.plugin.options",
    "lora_harness.plugin.collection",
    "lora_harness.plugin.selection",
    "lora_harness.plugin.fixtures",
    "lora_harness.plugin.check_fixtures",
    "lora_harness.plugin.session_end",
    "lora_harness.plugin.terminal",
]
