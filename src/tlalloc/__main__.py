"""``python -m tlalloc`` runs the ``tlalloc`` command."""

import sys

from tlalloc.cli import main

sys.exit(main())
