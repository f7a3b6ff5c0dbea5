from mpg_operator.cli import main

raise SystemExit(main())
