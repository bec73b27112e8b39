"""``python -m gnnseg.cli`` (as torchrun launches it): the ``gnnseg`` command."""

import sys

from gnnseg.cli import main

sys.exit(main())
