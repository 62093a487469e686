"""``python -m asr ...`` (and ``torchrun -m asr ...``): the same as the ``asr`` command."""
from .cli import entry

entry()
