"""``python -m sam_decoding.cli``: the same as the ``sam-decoding`` console script."""

import sys

from sam_decoding.cli import main

sys.exit(main())
