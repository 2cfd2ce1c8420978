"""`python -m aef_lit.training` runs the aef-train command line."""
from aef_lit.training import main

raise SystemExit(main())
