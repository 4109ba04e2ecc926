"""`python -m mvp.safety check|screen`: try crisis rules on messages (see mvp/safety/detect.py)."""
import sys

from mvp.safety.detect import main

sys.exit(main())
