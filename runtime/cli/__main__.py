"""``python -m runtime.cli``: the same as the ``modrpc`` command."""

import sys

from runtime.cli._main import main

sys.exit(main())
