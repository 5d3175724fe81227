from kneeoa.cli import main

raise SystemExit(main())
