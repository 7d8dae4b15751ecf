"""``python -m mlneurons`` (and ``torchrun -m mlneurons``): the command line."""

import sys

from mlneurons.interfaces.cli import main

sys.exit(main())
