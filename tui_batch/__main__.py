from tui_batch.cli import main

raise SystemExit(main())
