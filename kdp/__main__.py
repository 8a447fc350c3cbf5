"""``python -m kdp``: the same as the ``kdp`` command."""
import sys

from kdp.cli import main

sys.exit(main())
