"""asr: Whisper-style speech recognition with a richer positional and attention machinery.

The public names load on first use (asr.lazy): they need torch, and `asr --help` does not."""
from .lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {"SpeechModel": ".api", "load_model": ".api", "ModelDimensions": ".config", "ModelOptions": ".config",
            "StackOptions": ".config", "ASRModel": ".nn.model"}
__all__ = [*_EXPORTS, "__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
