from facesieve.cli.main import main

raise SystemExit(main())
