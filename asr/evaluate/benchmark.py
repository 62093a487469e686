"""`asr benchmark build offline-en OUT_DIR`: an English test set built only from what Debian
packages ship, plus recipes/synth_en's held-out splits when a build of it is given or found.

Groups (each scored on its own in the report):
- ``pocketsphinx``: pocketsphinx-testdata's recordings with their transcripts: five LibriVox
  read-speech clips, the five "cards" clips and goforward.raw ("go forward ten meters");
- ``alsa``: alsa-utils' spoken channel names (/usr/share/sounds/alsa/Front_Center.wav ->
  "front center"; Noise.wav is not speech and is left out);
- ``synth_en-dev``, ``synth_en-test-seen-voice``, ``synth_en-test-unseen-voice``: the splits of
  a recipes/synth_en build (synthetic speech; the audio stays where the build put it).

Package recordings are written as 16 kHz 16-bit wav under OUT_DIR/audio/ so the manifest does
not depend on the packages' sample rates or raw formats.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..data.manifest import Utterance, read_manifest, write_manifest
from ..store.atomic import atomic_write

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ALSA_NON_SPEECH = {"noise"}
GOFORWARD_TEXT = "go forward ten meters"
SYNTH_EN_SPLITS = ("dev", "test-seen-voice", "test-unseen-voice")
# where recipes/synth_en builds usually go (its README: --out out/synth_en), newest first
SYNTH_EN_GLOB = "out/synth_en*"
_TRANSCRIPT_LINE = re.compile(r"\s*(.*?)\s*\((\S+)\)\s*$")  # "<s> words </s> (file-id)"


class Clip(NamedTuple):
    id: str
    path: Path  # a wav file, or goforward.raw (headerless 16 kHz 16-bit little-endian)
    text: str
    speaker: str
    group: str


def _sphinx_transcripts(path: Path) -> list[tuple[str, str]]:
    """(file id, words) from a sphinx .transcription file, <s> </s> removed."""
    out = []
    for line in path.read_text().splitlines():
        if m := _TRANSCRIPT_LINE.match(line):
            out.append((m.group(2), " ".join(re.sub(r"</?s>", " ", m.group(1)).split())))
    return out


def pocketsphinx_clips() -> list[Clip]:
    """pocketsphinx-testdata's transcribed recordings ([] when the package is absent)."""
    clips = []
    librivox = POCKETSPHINX / "librivox" / "transcription"
    if librivox.exists():
        for name, text in _sphinx_transcripts(librivox):
            wav = librivox.parent / f"{name}.wav"
            if wav.exists():  # sense_and_sensibility_01_austen_64kb-0870 -> librivox-0870
                book = name.rsplit("-", 1)[0].rsplit("_austen", 1)[0]
                clips.append(Clip("librivox-" + name.rsplit("-", 1)[-1], wav, text, f"librivox-{book}",
                                  "pocketsphinx"))
    cards = POCKETSPHINX / "cards" / "cards.transcription"
    if cards.exists():
        for name, text in _sphinx_transcripts(cards):
            wav = cards.parent / f"{name}.wav"
            if wav.exists():
                clips.append(Clip(f"cards-{name}", wav, text, "cards", "pocketsphinx"))
    goforward = POCKETSPHINX / "goforward.raw"
    if goforward.exists():
        clips.append(Clip("goforward", goforward, GOFORWARD_TEXT, "goforward", "pocketsphinx"))
    return clips


def alsa_clips() -> list[Clip]:
    """alsa-utils' spoken channel names ([] when the package is absent)."""
    clips = []
    for wav in sorted(ALSA_SOUNDS.glob("*.wav")):
        text = wav.stem.replace("_", " ").lower()
        if text not in ALSA_NON_SPEECH:
            clips.append(Clip("alsa-" + text.replace(" ", "-"), wav, text, "alsa", "alsa"))
    return clips


def load_clip(path: Path) -> np.ndarray:
    """16 kHz mono float32 samples of a package clip (raw files are 16 kHz 16-bit)."""
    if path.suffix == ".raw":
        return np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
    return load_audio(path, SAMPLE_RATE)


def find_synth_en(repo: Optional[Path] = None) -> Optional[Path]:
    """The newest recipes/synth_en build under the repository's out/ with all three held-out
    splits, or None."""
    repo = repo or Path(__file__).resolve().parents[2]
    builds = [d for d in repo.glob(SYNTH_EN_GLOB) if all((d / f"{s}.jsonl").exists() for s in SYNTH_EN_SPLITS)]
    return max(builds, key=lambda d: (d / "dev.jsonl").stat().st_mtime) if builds else None


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    def write(temporary: Path) -> None:
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        temporary.write_bytes(buffer.getvalue())

    atomic_write(path, write)


def build_offline_en(out_dir: Path, synth_en: Optional[Path] = None, log=print) -> Path:
    """Write OUT_DIR/manifest.jsonl (and OUT_DIR/audio/) and return the manifest's path.
    Raises ValueError when no source at all is installed."""
    out_dir = Path(out_dir)
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    utterances = []
    for package, clips in (("pocketsphinx-testdata", pocketsphinx_clips()), ("alsa-utils", alsa_clips())):
        if not clips:
            log(f"offline-en: {package} is not installed (apt-get install {package}), its group is left out")
        for clip in clips:
            samples = load_clip(clip.path)
            wav = audio_dir / f"{clip.id}.wav"
            _write_wav(wav, samples)
            utterances.append(Utterance(clip.id, str(wav.absolute()), clip.text, round(len(samples) / SAMPLE_RATE, 3),
                                        clip.speaker, clip.group))
    if synth_en is not None:
        for split in SYNTH_EN_SPLITS:
            for u in read_manifest(Path(synth_en) / f"{split}.jsonl"):
                utterances.append(Utterance(f"synth_en-{u.id}", str(u.audio_path), u.text, u.duration,
                                            u.speaker, f"synth_en-{split}"))
        log(f"offline-en: synth_en splits from {synth_en}")
    else:
        log("offline-en: no recipes/synth_en build given or found (out/synth_en*), its groups are left out")
    if not utterances:
        raise ValueError(f"{out_dir}: nothing to build offline-en from (install pocketsphinx-testdata, alsa-utils)")
    manifest = out_dir / "manifest.jsonl"
    write_manifest(manifest, utterances)
    groups = {}
    for u in utterances:
        groups[u.group] = groups.get(u.group, 0) + 1
    log(f"offline-en: {len(utterances)} utterances ({', '.join(f'{g} {n}' for g, n in groups.items())}) -> {manifest}")
    return manifest


__all__ = ["Clip", "alsa_clips", "build_offline_en", "find_synth_en", "load_clip", "pocketsphinx_clips"]
