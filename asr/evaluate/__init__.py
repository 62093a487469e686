"""Evaluation: WER/CER error counts (metrics) and the machinery behind `asr evaluate` and
`asr compare`. Decoding goes through a model handed in by the caller (asr.api.load_model in the
CLI), so this package imports asr.text, asr.data, asr.audio and asr.store, never asr.api/cli."""
