"""The conversion error, apart from the readers: `asr convert`'s parser and error handling need it
before any weights are read, and the readers need torch (see asr.lazy)."""


class ConversionError(ValueError):
    """A source that cannot be converted; the message is one line naming it and the reason."""
