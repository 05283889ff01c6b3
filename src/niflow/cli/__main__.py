"""``python -m niflow.cli`` runs the command line."""

import sys

from niflow.cli.main import main

sys.exit(main())
