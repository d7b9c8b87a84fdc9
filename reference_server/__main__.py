"""`python -m reference_server`: the same as `primer-cache-server`."""

import sys

from reference_server.main import main

sys.exit(main())
