from facesieve.cli import main

raise SystemExit(main())
