"""`python -m mvp.safety check|screen|train|evaluate` (see mvp/safety/cli.py)."""
import sys

from mvp.safety.cli import main

sys.exit(main())
