"""The network: encoder, decoder and every seed component, one module each.

Owns ``ASRModel`` (model.py), attention (plain, hybrid local+global, dynamic convolution),
positions per stack (absolute tables, rotary with rotation, relative bias, learned sinusoids),
the explicit KV cache, and the named presets. Imports only ``asr.config`` and torch: nothing
here reads files, audio or text.
"""
