"""``python -m asr ...`` (and ``torchrun -m asr ...``): the same as the ``asr`` command."""
import sys

from .cli import main

sys.exit(main())
