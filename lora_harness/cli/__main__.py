from lora_harness.cli.main import main

raise SystemExit(main())
