"""``python -m hwkit.cli``."""

import sys

from hwkit.cli import main

sys.exit(main())
