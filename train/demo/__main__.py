"""`python -m train.demo`: build the offline demo model (see train/demo/build.py)."""
import sys

from train.demo.build import main

sys.exit(main())
