"""``python -m rankwise`` (also ``torchrun -m rankwise finetune ...``): the `rankwise` command."""

import sys

from rankwise.cli.main import main

sys.exit(main())
