"""The network: encoder, decoder and every seed component, one module each.

Owns ``ASRModel`` (model.py), attention (plain, hybrid local+global, dynamic convolution: every
kind a ``MultiHeadAttention`` with the same weight names, chosen by name through
``model.ATTENTION_LAYERS``), positions per stack (absolute tables, rotary with rotation and the
stack's rotary base, relative bias, learned sinusoids), where every extra starts
(extras_init.py, the one init policy), the explicit KV cache, and the named presets. Imports
only ``asr.config`` and torch: nothing here reads files, audio or text.
"""
