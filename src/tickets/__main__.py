"""``python -m tickets`` (and ``torchrun --nproc-per-node N -m tickets find …``): the ``tickets`` command."""

import sys

from tickets.cli import main

sys.exit(main())
