"""`python -m mvp.assessment`: score answers from the command line (see mvp/assessment/cli.py)."""
import sys

from mvp.assessment.cli import main

sys.exit(main())
