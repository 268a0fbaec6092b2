"""``python -m mainline_dht``: the same as the ``mainline-dht`` command."""

import sys

from .cli import main

sys.exit(main())
