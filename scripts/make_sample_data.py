#!/usr/bin/env python3
"""Regenerate data/: a few short speech clips with transcripts, from Debian packages.

Sources (Debian 12 packages; install with
``apt-get install pocketsphinx-testdata alsa-utils espeak-ng``):
- pocketsphinx-testdata: LibriVox read speech and "go forward ten meters" (16 kHz),
- alsa-utils: spoken speaker-channel names (48 kHz, resampled here to 16 kHz),
- espeak-ng: two sentences synthesised here (22.05 kHz, resampled to 16 kHz).

Every clip is written as 16 kHz mono 16-bit FLAC; 16 kHz sources are copied
sample-for-sample (lossless), others are resampled with soxr ("HQ", band-limited).
The manifest data/samples.jsonl gets one JSON object per clip. See data/README.md.

Usage: python scripts/make_sample_data.py [--out data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000  # Hz, the model's input rate
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")

# LibriVox clips: (utterance id in librivox/transcription, output id)
LIBRIVOX = [
    ("sense_and_sensibility_01_austen_64kb-0870", "librivox-0870"),
    ("sense_and_sensibility_01_austen_64kb-0880", "librivox-0880"),
    ("sense_and_sensibility_01_austen_64kb-0930", "librivox-0930"),
]
# alsa-utils clips: (file name, output id, what is said)
ALSA = [
    ("Front_Center.wav", "alsa-front-center", "front center"),
    ("Rear_Left.wav", "alsa-rear-left", "rear left"),
]
# espeak-ng clips: (output id, espeak-ng arguments, sentence)
ESPEAK = [
    ("espeak-en-us-library", ["-v", "en-us", "-s", "160"],
     "The library opens at nine in the morning and closes early on Sundays."),
    ("espeak-en-gb-kettle", ["-v", "en-gb-x-rp", "-s", "150"],
     "She put the kettle on and waited for the rain to stop."),
]  # fmt: skip


def read_librivox_transcripts() -> dict[str, str]:
    """Parse Sphinx's '<s> words </s> (utt_id)' lines into {utt_id: words}."""
    transcripts = {}
    for line in (POCKETSPHINX / "librivox" / "transcription").read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        words, _, utt = line.rpartition("(")
        words = words.replace("<s>", "").replace("</s>", "")
        transcripts[utt.rstrip(")").strip()] = " ".join(words.split())
    return transcripts


def to_16k_int16(path_or_data, rate: int | None = None) -> np.ndarray:
    """Mono int16 samples at 16 kHz: copied when already 16 kHz, else soxr-resampled."""
    if rate is None:
        info = sf.info(str(path_or_data))
        if info.channels != 1:
            raise SystemExit(f"{path_or_data}: expected mono, got {info.channels} channels")
        if info.samplerate == TARGET_RATE and info.subtype == "PCM_16":
            data, _ = sf.read(str(path_or_data), dtype="int16")
            return data  # bit-exact copy
        data, rate = sf.read(str(path_or_data), dtype="float32")
    else:
        data = path_or_data
    data = soxr.resample(data.astype(np.float32), rate, TARGET_RATE, quality="HQ")
    return np.round(np.clip(data, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def write_clip(out_dir: Path, clip_id: str, samples: np.ndarray) -> tuple[str, float]:
    rel = f"audio/{clip_id}.flac"
    sf.write(str(out_dir / rel), samples, TARGET_RATE, format="FLAC", subtype="PCM_16")
    return rel, round(len(samples) / TARGET_RATE, 3)


def main(argv=None) -> int:
    default_out = Path(__file__).resolve().parents[1] / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out, help="output folder (data/)")
    args = parser.parse_args(argv)

    missing = [p for p in (POCKETSPHINX / "librivox", ALSA_SOUNDS) if not p.is_dir()]
    espeak = shutil.which("espeak-ng")
    if missing or espeak is None:
        print("missing sources:", *[str(p) for p in missing], "" if espeak else "espeak-ng", file=sys.stderr)
        print("install: apt-get install pocketsphinx-testdata alsa-utils espeak-ng", file=sys.stderr)
        return 1

    out_dir: Path = args.out
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rows = []

    transcripts = read_librivox_transcripts()
    for utt, clip_id in LIBRIVOX:
        samples = to_16k_int16(POCKETSPHINX / "librivox" / f"{utt}.wav")
        rel, dur = write_clip(out_dir, clip_id, samples)
        rows.append({"id": clip_id, "audio": rel, "text": transcripts[utt], "duration": dur,
                     "speaker": "librivox-sense_and_sensibility_01", "group": "real"})  # fmt: skip

    # goforward.raw: headerless 16 kHz, 16-bit little-endian, mono
    raw = np.fromfile(POCKETSPHINX / "goforward.raw", dtype="<i2")
    rel, dur = write_clip(out_dir, "goforward", raw)
    rows.append({"id": "goforward", "audio": rel, "text": "go forward ten meters", "duration": dur,
                 "speaker": "cmusphinx-goforward", "group": "real"})  # fmt: skip

    for name, clip_id, text in ALSA:
        samples = to_16k_int16(ALSA_SOUNDS / name)
        rel, dur = write_clip(out_dir, clip_id, samples)
        rows.append({"id": clip_id, "audio": rel, "text": text, "duration": dur,
                     "speaker": "alsa-utils", "group": "real"})  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        for clip_id, voice_args, text in ESPEAK:
            wav = Path(tmp) / f"{clip_id}.wav"
            subprocess.run([espeak, *voice_args, "-w", str(wav), text], check=True)
            samples = to_16k_int16(wav)
            rel, dur = write_clip(out_dir, clip_id, samples)
            rows.append({"id": clip_id, "audio": rel, "text": text, "duration": dur,
                         "speaker": "espeak-ng:" + voice_args[1], "group": "synthetic"})  # fmt: skip

    with open(out_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    total = sum(r["duration"] for r in rows)
    print(f"wrote {len(rows)} clips ({total:.1f} s) and samples.jsonl to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
