from zeroi2v.cli import main

raise SystemExit(main())
