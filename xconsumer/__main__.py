from xconsumer.cli import main

raise SystemExit(main())
