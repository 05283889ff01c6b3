"""``python -m niflow`` (and ``torchrun -m niflow``) runs the command line."""

import sys

from niflow.cli.main import main

sys.exit(main())
