"""`python -m mvp.assessment`: score answers from the command line (see mvp/assessment/screening.py)."""
import sys

from mvp.assessment.screening import main

sys.exit(main())
