"""What a checkpoint directory is called and holds, and its error: the part of asr.store.checkpoint
that the command line needs before any model runs, kept apart from it because reading weights
needs torch (see asr.lazy)."""
FORMAT = "asr-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read; the message names it and the reason."""
