"""``python -m keras_explainable`` runs the ``keras-explainable`` command (see :mod:`.cli`)."""

import sys

from .cli import main

sys.exit(main())
