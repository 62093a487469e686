"""The three offline synthesisers, their voices, and running them.

Engines (Debian packages):
- ``espeak-ng``: formant synthesis; an English accent (``-v en-us``) combined with a
  voice variant (``+f3``, ``+Andy``, ...), rate ``-s`` (words per minute) and pitch
  ``-p`` (0-99). Hundreds of combinations, fast (one process per utterance costs
  ~15 ms), robotic.
- ``flite``: CMU Flite's voices slt, awb, rms, kal16; more natural. Rate through
  ``duration_stretch``, pitch through ``int_f0_target_mean`` (Hz; the rms voice
  ignores it).
- ``festival``: the kal and ked diphone voices; rate through ``Duration_Stretch``,
  pitch through the intonation model's target mean. Festival takes ~0.3 s to start,
  so one process synthesises a whole job of utterances from a generated script.

A voice is ``engine:name``, e.g. ``espeak-ng:en-gb-scotland+f2``, ``flite:slt``; that
string is the manifest's ``speaker``. Rate and pitch vary per utterance and are not
part of the voice.

Every clip is resampled to 16 kHz (soxr, band-limited), scaled to a random peak level
(the engines' native levels differ by 8 dB and more) and written as 16-bit FLAC.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000  # Hz, the corpus's (and the model's) rate
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices/english")
SUBPROCESS_TIMEOUT_S = 120  # one festival job of a few dozen utterances takes seconds

# Debian package providing each engine, and how to tell it is installed.
ENGINE_PACKAGES = {"espeak-ng": ["espeak-ng"], "flite": ["flite"], "festival": ["festival"]}
FESTIVAL_VOICE_PACKAGES = {"kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k"}
FORTUNE_PACKAGES = ["fortunes", "fortunes-min"]


@dataclass(frozen=True)
class Utterance:
    """One planned clip: what to say, with which voice, rate and pitch, where to write it."""

    id: str
    split: str
    text: str  # transcript
    spoken: str  # synthesiser input
    source: str  # "fortunes" or "grammar"
    engine: str
    voice: str  # engine's own voice name, e.g. "en-us+f3", "slt", "kal_diphone"
    rate: float  # espeak-ng: words per minute; flite/festival: duration stretch (>1 = slower)
    pitch: float  # espeak-ng: 0-99; flite/festival: target mean F0 in Hz
    peak: float  # linear peak amplitude of the written clip
    path: str  # absolute output path (.flac)

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.voice}"


# ---------------------------------------------------------------------------- installed?


def engine_available(engine: str, voice: Optional[str] = None) -> bool:
    if engine == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        if shutil.which("festival") is None:
            return False
        return voice is None or (FESTIVAL_VOICE_DIR / voice).is_dir()
    raise ValueError(f"unknown engine {engine!r}")


def missing_packages(festival_voices, need_fortunes: bool, fortune_dir: Path) -> list[str]:
    """Debian packages this recipe needs that are not installed."""
    missing = []
    for engine, packages in ENGINE_PACKAGES.items():
        if not engine_available(engine):
            missing += packages
    for voice in festival_voices:
        if not (FESTIVAL_VOICE_DIR / voice).is_dir() and voice in FESTIVAL_VOICE_PACKAGES:
            missing.append(FESTIVAL_VOICE_PACKAGES[voice])
    if need_fortunes and not fortune_dir.is_dir():
        missing += FORTUNE_PACKAGES
    return missing


def install_packages(packages: list[str]) -> bool:
    """apt-get install as root; says what it does. False if it could not."""
    if not packages:
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"note: not root (or no apt-get): not installing {' '.join(packages)}; "
              "the engines they provide are left out")  # fmt: skip
        return False
    print(f"installing Debian packages: {' '.join(packages)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", *packages]
    if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode == 0:
        return True
    # a fresh machine may have no package lists yet
    subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
    ok = subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode == 0
    if not ok:
        print(f"warning: apt-get could not install {' '.join(packages)}")
    return ok


def espeak_variants() -> set[str]:
    """Variant names espeak-ng knows (``+name``). An unknown variant is silently
    ignored by espeak-ng, so the configured ones are checked against this list."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True).stdout
    names = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("!v/"):
            names.add(fields[4][3:])
    return names


def espeak_languages() -> set[str]:
    listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True).stdout
    return {line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1}


def engine_versions() -> dict[str, str]:
    """Version strings for the dataset card (empty for engines not installed)."""
    versions = {}
    for engine, command in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                            ("festival", ["festival", "--version"])):  # fmt: skip
        if shutil.which(command[0]):
            run = subprocess.run(command, capture_output=True, text=True)
            versions[engine] = " ".join((run.stdout or run.stderr).split())[:120]
    return versions


# ---------------------------------------------------------------------------- synthesis


def synthesize_job(job: list[Utterance]) -> list[tuple[str, int, str]]:
    """Synthesise a list of utterances of one engine: [(id, samples written, error)].

    Runs in a worker process. ``samples`` is 0 and ``error`` says why when a clip
    failed (the caller leaves it out of the manifest).
    """
    if not job:
        return []
    engine = job[0].engine
    with tempfile.TemporaryDirectory(prefix="synth_en_") as tmp:
        if engine == "festival":
            waves = _festival(job, Path(tmp))
        else:
            run = _espeak if engine == "espeak-ng" else _flite
            waves = [run(u, Path(tmp)) for u in job]
    results = []
    for utterance, wave in zip(job, waves):
        if isinstance(wave, str):
            results.append((utterance.id, 0, wave))
            continue
        audio = _finish(*wave, peak=utterance.peak)
        if audio is None:
            results.append((utterance.id, 0, "silent or empty output"))
            continue
        sf.write(utterance.path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        results.append((utterance.id, len(audio), ""))
    return results


def _finish(audio: np.ndarray, rate: int, peak: float) -> Optional[np.ndarray]:
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top == 0.0:
        return None
    return (audio * (peak / top)).astype(np.float32)


def _read(data_or_path) -> tuple[np.ndarray, int]:
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    audio, rate = sf.read(source, dtype="float32")
    return audio, rate


def _espeak(u: Utterance, tmp: Path):
    command = ["espeak-ng", "-v", u.voice, "-s", str(round(u.rate)), "-p", str(round(u.pitch)), "--stdout", u.spoken]
    run = subprocess.run(command, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    if run.returncode != 0 or len(run.stdout) <= 44:
        return f"espeak-ng failed: {run.stderr.decode(errors='replace').strip()[:200]}"
    return _read(run.stdout)


def _flite(u: Utterance, tmp: Path):
    out = tmp / f"{u.id}.wav"
    command = [
        "flite", "-voice", u.voice,
        "--setf", f"duration_stretch={u.rate:.3f}", "--setf", f"int_f0_target_mean={u.pitch:.1f}",
        "-t", u.spoken, "-o", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    if run.returncode != 0 or not out.exists():
        return f"flite failed: {run.stderr.decode(errors='replace').strip()[:200]}"
    return _read(out)


def _festival(job: list[Utterance], tmp: Path) -> list:
    """One festival process for the whole job, driven by a generated Scheme script."""
    lines = []
    for u in job:
        out = tmp / f"{u.id}.wav"
        # Selecting the voice resets its intonation parameters, so set them after it.
        # The spoken text holds only letters, apostrophes, spaces and , . ? ! (no quotes).
        lines += [
            f"(voice_{u.voice})",
            f"(Parameter.set 'Duration_Stretch {u.rate:.3f})",
            f"(set! int_lr_params (cons (list 'target_f0_mean {u.pitch:.1f}) int_lr_params))",
            f'(utt.save.wave (utt.synth (Utterance Text "{u.spoken}")) "{out}" \'riff)',
        ]
    script = tmp / "job.scm"
    script.write_text("\n".join(lines) + "\n")
    run = subprocess.run(["festival", "-b", str(script)], capture_output=True, timeout=SUBPROCESS_TIMEOUT_S)
    waves = []
    for u in job:
        out = tmp / f"{u.id}.wav"
        if out.exists() and out.stat().st_size > 44:
            waves.append(_read(out))
        else:
            waves.append(f"festival failed: {run.stderr.decode(errors='replace').strip()[:200]}")
    return waves
