"""``python -m nexa_engines.serve``: the serving process."""

import sys

from nexa_engines.serve.server import main

sys.exit(main())
