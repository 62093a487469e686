"""asr: Whisper-style speech recognition with a richer positional and attention machinery."""
from .api import SpeechModel, load_model
from .config import ModelDimensions, ModelOptions, StackOptions
from .nn.model import ASRModel

__version__ = "0.1.0"
__all__ = ["ASRModel", "ModelDimensions", "ModelOptions", "SpeechModel", "StackOptions", "load_model",
           "__version__"]
