"""``python -m keras_explainable.cli`` runs the ``keras-explainable`` command."""

import sys

from . import main

sys.exit(main())
