"""`python -m aef_lit.prithvi`: train (and ship) a Prithvi-style MAE (chapter 31). Hand-written."""
from aef_lit.prithvi.cli import main

raise SystemExit(main())
