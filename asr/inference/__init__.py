"""Inference: decoding (greedy, sampling, beam search over the KV cache, Whisper's timestamp
rules), long-form transcription over windows, and the output writers (txt/srt/vtt/tsv/json).
Imports ``asr.nn``, ``asr.audio``, ``asr.text`` and ``asr.store``; never ``asr.cli``.
"""
