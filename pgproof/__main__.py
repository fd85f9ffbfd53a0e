from pgproof.cli import main

raise SystemExit(main())
