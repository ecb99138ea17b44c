"""``python -m gpupool_operator`` is the ``gpupool`` command."""

import sys

from gpupool_operator.cli import main

sys.exit(main())
