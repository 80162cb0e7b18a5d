from mm_sim.cli import main

raise SystemExit(main())
