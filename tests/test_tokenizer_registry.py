"""Tokenizer.load finds its backend by the kind in the saved description, whatever the caller
imported before (the Whisper BPE backend once registered itself only when asr.checkpoint had
been imported)."""
import json
import subprocess
import sys

import pytest

from asr.store.registry import resolve
from asr.text.tokenizer import backend_class


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ASR_CACHE_DIR", str(tmp_path_factory.mktemp("asr-cache")))
    yield resolve("tiny.en", quiet=True)
    mp.undo()


def test_whisper_tokenizer_loads_in_a_fresh_interpreter_importing_nothing_else(tiny_en):
    program = (
        "import json, sys\n"
        "from asr.text.tokenizer import Tokenizer\n"
        f"directory = {str(tiny_en)!r}\n"
        "description = json.load(open(directory + '/config.json'))['tokenizer']\n"
        "backend_imported_before = 'asr.text.whisper_bpe' in sys.modules\n"
        "tok = Tokenizer.load(directory, description)\n"
        "ids = tok.encode(' Go forward ten meters.')\n"
        "print(json.dumps({'kind': description['kind'], 'n_vocab': tok.n_vocab, 'text': tok.decode(ids),\n"
        "                  'backend_imported_before': backend_imported_before}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kind"] == "whisper-bpe"
    assert out["n_vocab"] == 51864  # Whisper tiny.en's vocabulary, as its model.bin says
    assert out["text"] == " Go forward ten meters."
    assert out["backend_imported_before"] is False  # nothing had registered it


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'bpe-9'.*sentencepiece.*whisper-bpe"):
        backend_class("bpe-9")
