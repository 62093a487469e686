"""Text: the tokenizer (sentencepiece, or Whisper's byte-level BPE behind the same interface,
with Whisper's special and timestamp tokens) and text normalisation shared by training,
validation and evaluation. Imports ``asr.errors`` and ``asr.store.atomic`` only.
"""
