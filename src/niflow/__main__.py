"""``python -m niflow`` (and ``torchrun -m niflow``) runs the command line."""

import sys

from niflow.cli import main

sys.exit(main())
