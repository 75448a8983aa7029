from rl_core.cli import main

raise SystemExit(main())
