"""`python -m npconv` runs the command line (see npconv.cli)."""

import sys

from npconv.cli import main

sys.exit(main())
