"""`python -m vtok.cli ...`: the `vtok` command, as the tests and benchmarks run it."""

import sys

from . import main

sys.exit(main())
