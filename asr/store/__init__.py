"""Storage: model checkpoints (a directory of config.json + model.safetensors + tokenizer,
loaded without unpickling), the registry of named models and their cache, and the one atomic
file write every file the package produces goes through. Imports ``asr.nn``, ``asr.text`` and
``asr.config``.
"""
