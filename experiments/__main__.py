"""`python -m experiments ...`: see experiments/cli.py."""

import sys

from .cli import main

sys.exit(main())
