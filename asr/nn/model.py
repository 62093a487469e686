"""The Whisper-style encoder-decoder: log-mel frames in, token logits out.

Encoder: Conv1d(n_mels->d, k3) + GELU, Conv1d(d->d, k3, stride 2) + GELU, pre-LN residual
blocks, LayerNorm (with ModelOptions.audio_stride 4 the first convolution has stride 2 too). Batches of different lengths carry a padding mask; nothing forces 30 s
windows unless the model was built for them (imported Whisper weights).
Decoder: token embedding + positions, pre-LN blocks of causal self-attention, cross-attention
and a GELU MLP, LayerNorm, logits through the tied token embedding, in float32.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelDimensions, ModelOptions, StackOptions
from .attention import AttentionInputs, CrossAttention, MultiHeadAttention, cross_attention_scores
from .dynconv import DynamicConvAttention
from .extras_init import check_function_preserving, reset_extras
from .hybrid_attention import HybridAttention
from .kv_cache import DecoderCache, LayerCache
from .positions import StackPositions

MLP_RATIO = 4  # hidden width of the feed-forward block, as in Whisper

# The self-attention kinds a stack can ask for (StackOptions.attention), one class each. Every
# class is a MultiHeadAttention (same qkv / out weights, same forward signature) built by its
# from_options, so adding a kind is one class and one line here.
ATTENTION_LAYERS: dict[str, type[MultiHeadAttention]] = {
    "mha": MultiHeadAttention,
    "hybrid": HybridAttention,
    "dynconv": DynamicConvAttention,
}
# the model's two stacks, as rotary_bases() / set_rotary_base() name them
STACKS = ("encoder", "decoder")


def make_self_attention(kind: str, n_state: int, n_head: int, options: StackOptions,
                        positions: StackPositions, causal: bool) -> MultiHeadAttention:
    if kind not in ATTENTION_LAYERS:
        raise ValueError(f"unknown attention kind {kind!r}; choose from {', '.join(ATTENTION_LAYERS)}")
    return ATTENTION_LAYERS[kind].from_options(n_state, n_head, positions.layer_rotary(), options, causal)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, self_attention: nn.Module, cross_attention: bool):
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = self_attention
        self.cross_attn_ln = nn.LayerNorm(n_state) if cross_attention else None
        self.cross_attn = CrossAttention(n_state, n_head) if cross_attention else None
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, MLP_RATIO * n_state), nn.GELU(),
                                 nn.Linear(MLP_RATIO * n_state, n_state))

    def forward(self, x: Tensor, inputs: AttentionInputs, audio: Optional[Tensor] = None,
                audio_mask: Optional[Tensor] = None, cache: Optional[LayerCache] = None,
                group: int = 1, cross_scores: Optional[list] = None) -> Tensor:
        """`cross_scores`: a list to append this block's cross-attention scores to (before the
        softmax; see cross_attention_scores), for word-level timestamps."""
        x = x + self.attn(self.attn_ln(x), inputs, cache)
        if self.cross_attn is not None:
            queries = self.cross_attn_ln(x)
            if cross_scores is not None:
                cross_scores.append(cross_attention_scores(self.cross_attn, queries, audio))
            x = x + self.cross_attn(queries, audio, audio_mask, cache, group)
        return x + self.mlp(self.mlp_ln(x))


def length_mask(lengths: Tensor, max_length: int) -> Tensor:
    """[batch, max_length] bool, True where the position is inside the sequence."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def conv_lengths(n: Tensor, stride: int) -> Tensor:
    """Output positions of a kernel-3, padding-1 convolution with this stride over n inputs."""
    return (n + stride - 1) // stride


def encoder_lengths(n_frames: Tensor, audio_stride: int = 2) -> Tensor:
    """Encoder positions for n_frames mel frames: the stem's convolutions (kernel 3, padding 1)
    have strides (1, 2) for audio_stride 2 (Whisper's) and (2, 2) for 4."""
    first, second = stem_strides(audio_stride)
    return conv_lengths(conv_lengths(n_frames, first), second)


def stem_strides(audio_stride: int) -> tuple[int, int]:
    return (audio_stride // 2, 2)


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDimensions, options: ModelOptions):
        super().__init__()
        d, n_head = dims.n_audio_state, dims.n_audio_head
        stack = options.audio
        self.fixed_window = options.fixed_audio_window
        self.n_ctx = dims.n_audio_ctx
        self.stride = options.audio_stride
        first, second = stem_strides(self.stride)
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, stride=first, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=second, padding=1)
        self.positions = StackPositions(dims.n_audio_ctx, d, n_head, stack, causal=False)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, n_head, make_self_attention(kind, d, n_head, stack, self.positions,
                                                                  causal=False), cross_attention=False)
            for kind in stack.attention_kinds(dims.n_audio_layer)
        )
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: Tensor, n_frames: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """mel [batch, n_mels, frames] (right-padded), n_frames [batch] or None (all full).
        Returns (features [batch, positions, d], mask [batch, positions] bool or None)."""
        frames = mel.shape[-1]
        if self.fixed_window:
            if frames != self.stride * self.n_ctx:
                raise ValueError(f"this model takes fixed windows of {self.stride * self.n_ctx} frames, got {frames}")
            n_frames = None  # Whisper attends to its padding: no mask
        x = F.gelu(self.conv1(mel))
        if n_frames is not None:
            # the second conv must see zeros past the end, exactly like its own zero padding
            # when the utterance is encoded alone
            first_lengths = conv_lengths(n_frames, stem_strides(self.stride)[0])
            x = x * length_mask(first_lengths, x.shape[-1])[:, None, :].to(x.dtype)
        # contiguous: every block then sees one memory layout (torch.compile guards on strides)
        x = F.gelu(self.conv2(x)).transpose(1, 2).contiguous()
        mask = None if n_frames is None else length_mask(encoder_lengths(n_frames, self.stride), x.shape[1])
        absolute = self.positions.embed(0, x.shape[1], x.device)
        if absolute is not None:
            x = x + absolute.to(x.dtype)
        inputs = self.positions.attention_inputs(x.shape[1], 0, mask)
        for block in self.blocks:
            x = block(x, inputs)
        return self.ln_post(x), mask


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions, options: ModelOptions):
        super().__init__()
        d, n_head = dims.n_text_state, dims.n_text_head
        stack = options.text
        self.token_embedding = nn.Embedding(dims.n_vocab, d)
        self.positions = StackPositions(dims.n_text_ctx, d, n_head, stack, causal=True)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(d, n_head, make_self_attention(kind, d, n_head, stack, self.positions,
                                                                  causal=True), cross_attention=True)
            for kind in stack.attention_kinds(dims.n_text_layer)
        )
        self.ln = nn.LayerNorm(d)
        # inference only: a module computing the tied output projection in another form (an int8
        # copy of the embedding, asr.inference.compute); None = the embedding itself
        self.output_projection: Optional[nn.Module] = None

    def forward(self, tokens: Tensor, audio: Tensor, audio_mask: Optional[Tensor] = None,
                cache: Optional[DecoderCache] = None, cross_scores: Optional[list] = None) -> Tensor:
        """tokens [batch, n] (only the new ones when a cache is given) -> logits [batch, n, n_vocab]
        in float32. The cache advances by n. With a cache of group_size g, tokens has
        g rows per utterance of audio (beam search). Given a list, `cross_scores` receives each
        layer's cross-attention scores [batch, n_head, n, frames] (word-level timestamps)."""
        offset = cache.offset if cache is not None else 0
        group = cache.group_size if cache is not None else 1
        x = self.token_embedding(tokens)
        absolute = self.positions.embed(offset, tokens.shape[1], tokens.device)
        if absolute is not None:
            x = x + absolute.to(x.dtype)
        inputs = self.positions.attention_inputs(tokens.shape[1], offset, key_mask=None)
        for i, block in enumerate(self.blocks):
            x = block(x, inputs, audio, audio_mask, cache.layers[i] if cache is not None else None, group,
                      cross_scores)
        if cache is not None:
            cache.offset += tokens.shape[1]
        x = self.ln(x)
        if self.output_projection is not None and not torch.is_grad_enabled():
            return self.output_projection(x).float()
        return (x @ self.output_weight(x.dtype)).float()

    def output_weight(self, dtype: torch.dtype) -> Tensor:
        """The tied output projection [n_text_state, n_vocab].

        With gradients on (training) this is the embedding's transpose, a view. Without, it is
        a contiguous transposed copy, kept until the embedding changes: a one-token decoding
        step is a matrix-vector product over the whole vocabulary, and reading the weight in
        this layout takes about half the time of the transposed view on CPU (measured: 3.5-4.6
        ms against 7.8-8.5 ms for Whisper tiny's 51864 x 384). A model loaded for inference
        already stores the embedding that way (asr.store.checkpoint.embedding_in_output_layout),
        and then its transpose is used as it is, without a copy."""
        weight = self.token_embedding.weight
        if torch.is_grad_enabled():
            return weight.to(dtype).t()
        if weight.dtype == dtype and weight.t().is_contiguous():
            return weight.t()
        key = (weight.data_ptr(), weight._version, dtype, weight.device)
        if getattr(self, "_output_weight_key", None) != key:
            with torch.no_grad():
                self._output_weight = weight.detach().to(dtype).t().contiguous()
            self._output_weight_key = key
        return self._output_weight


class ASRModel(nn.Module):
    def __init__(self, dims: ModelDimensions, options: Optional[ModelOptions] = None):
        super().__init__()
        self.dims = dims
        self.options = options or ModelOptions()
        self.encoder = AudioEncoder(dims, self.options)
        self.decoder = TextDecoder(dims, self.options)
        # inference only: the CTC head a jointly trained model was saved with (asr.nn.ctc_head;
        # plain tensors outside the state dict), read by joint CTC/attention decoding
        self.ctc_head = None
        # inference only: the decoder's (layer, head) cross-attention pairs that follow the audio
        # in time (Whisper's alignment heads, kept by the conversion), for word-level timestamps;
        # None: asr.inference.word_timing's default
        self.alignment_heads: Optional[list] = None
        # where the extras start is decided in one place: asr/nn/extras_init.py
        preserving = self.options.function_preserving_init
        for name, stack in self.stacks().items():
            if preserving:
                check_function_preserving(name, stack.blocks, stack.positions.n_ctx)
            reset_extras(stack, preserving)

    def stacks(self) -> dict[str, nn.Module]:
        """{"encoder": ..., "decoder": ...}, the names rotary_bases() and set_rotary_base() use."""
        return dict(zip(STACKS, (self.encoder, self.decoder)))

    # -- positional machinery -------------------------------------------------------------
    def rotary_bases(self) -> dict[str, float]:
        """The live rotary base of each stack that has rotary embeddings ("encoder", "decoder"),
        read from the buffer its rotary layers use."""
        bases = {name: stack.positions.rotary_base for name, stack in self.stacks().items()}
        return {name: base for name, base in bases.items() if base is not None}

    def set_rotary_base(self, value: float, stack: Optional[str] = None) -> None:
        """Dynamic base adjustment: every rotary layer of `stack` ("encoder" or "decoder"; None =
        every stack with rotary) reads the new base from then on. The buffers change in place
        (copy_, no new tensors), so optimisers, torch.compile and DDP keep working; the stack's
        options follow, so a checkpoint's config.json records the new base."""
        names = list(self.rotary_bases()) if stack is None else [stack]
        if not names:
            raise ValueError("this model has no rotary embeddings")
        for name in names:
            if name not in STACKS:
                raise ValueError(f"unknown stack {name!r}; choose from {', '.join(STACKS)}")
            if name not in self.rotary_bases():
                raise ValueError(f"the {name} has no rotary embeddings")
            self.stacks()[name].positions.set_rotary_base(value)

    @torch.no_grad()
    def reset_extras_to_identity(self) -> None:
        """Every seed extra back to the identity, the function-preserving starting point (see
        asr/nn/extras_init.py): Givens angles 0, R = I, rotary scale 0, relative bias 0,
        hybrid output scales 1, dynamic-convolution output projections 0."""
        for stack in self.stacks().values():
            reset_extras(stack, function_preserving=True)

    # -- audio geometry ---------------------------------------------------------------------
    @property
    def audio_stride(self) -> int:
        """Mel frames (10 ms each) per encoder position."""
        return self.options.audio_stride

    @property
    def window_frames(self) -> int:
        """The most mel frames the encoder takes at once (3000 = 30 s for Whisper)."""
        return self.audio_stride * self.dims.n_audio_ctx

    def encoder_lengths(self, n_frames: Tensor) -> Tensor:
        return encoder_lengths(n_frames, self.audio_stride)

    # -- forward ----------------------------------------------------------------------------
    def embed_audio(self, mel: Tensor, n_frames: Optional[Tensor] = None):
        return self.encoder(mel, n_frames)

    def logits(self, tokens: Tensor, audio: Tensor, audio_mask: Optional[Tensor] = None,
               cache: Optional[DecoderCache] = None) -> Tensor:
        return self.decoder(tokens, audio, audio_mask, cache)

    def forward(self, mel: Tensor, tokens: Tensor, n_frames: Optional[Tensor] = None) -> Tensor:
        audio, audio_mask = self.encoder(mel, n_frames)
        return self.decoder(tokens, audio, audio_mask)

    def new_cache(self, group_size: int = 1) -> DecoderCache:
        return DecoderCache.empty(len(self.decoder.blocks), group_size)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
