"""Check a whole data set up front, so that every problem is reported before any work
starts rather than one crash at a time hours into training.

Checks per utterance: a duplicate id, a missing file, a file that is not readable
audio, empty audio, audio longer than ``max_duration``, and a transcript that is
empty or has nothing to say (no letter or digit in any script).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import soundfile as sf

from ..audio import SAMPLE_RATE, AudioError, load_audio
from .manifest import Utterance

DEFAULT_MAX_DURATION = 30.0  # seconds: one Whisper input window


@dataclass
class BadUtterance:
    index: int  # position in the list given to validate(), since ids may repeat
    id: str
    audio: str
    problems: list[str]

    @property
    def line(self) -> str:
        return f"{self.id}: {self.audio}: {'; '.join(self.problems)}"


@dataclass
class Report:
    """What validate() found.

    ``durations[i]`` is utterance i's measured length in seconds (None where the audio
    was not read, or could not be).
    """

    n_checked: int = 0
    bad: list[BadUtterance] = field(default_factory=list)
    durations: list[Optional[float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def bad_ids(self) -> set[str]:
        return {item.id for item in self.bad}

    @property
    def bad_indices(self) -> set[int]:
        return {item.index for item in self.bad}

    def lines(self) -> list[str]:
        return [item.line for item in self.bad]

    def __str__(self) -> str:
        if self.ok:
            return f"all {self.n_checked} utterances are fine"
        header = f"{len(self.bad)} of {self.n_checked} utterances have problems:"
        return "\n".join([header, *("  " + line for line in self.lines())])


def validate(
    utterances: Iterable[Utterance],
    max_duration: Optional[float] = DEFAULT_MAX_DURATION,
    check_audio: bool = True,
    progress: bool = False,
) -> Report:
    """Check every utterance and return one report listing all problems.

    With ``check_audio`` each file is opened: soundfile reads only the header (fast);
    what it cannot open goes through load_audio, which also tries ffmpeg for other
    containers. Without it only the manifest's own fields are checked, using its
    ``duration`` for the length limit. ``max_duration=None`` disables that limit.
    """
    from tqdm import tqdm

    utterances = list(utterances)
    report = Report(n_checked=len(utterances), durations=[None] * len(utterances))
    seen: set[str] = set()
    for index, u in enumerate(tqdm(utterances, desc="checking", unit="utt", disable=not progress)):
        problems = []
        if u.id in seen:
            problems.append("duplicate id")
        seen.add(u.id)

        problem = transcript_problem(u.text)
        if problem:
            problems.append(problem)

        duration = u.duration
        if check_audio:
            duration, problem = measure(u)
            if problem:
                problems.append(problem)
            else:
                report.durations[index] = duration
        if duration is not None and max_duration is not None and duration > max_duration:
            problems.append(f"too long ({duration:.2f} s > {max_duration:g} s)")

        if problems:
            report.bad.append(BadUtterance(index, u.id, str(u.audio_path), problems))
    return report


def transcript_problem(text: str) -> Optional[str]:
    if not text.strip():
        return "empty transcript"
    # str.isalnum covers letters and digits of every script; punctuation alone is unspeakable
    if not any(ch.isalnum() for ch in text):
        return f"transcript has no letters or digits ({text.strip()[:40]!r})"
    return None


def measure(u: Utterance) -> tuple[Optional[float], Optional[str]]:
    """(duration in seconds, None) for good audio, (None, problem) otherwise."""
    path = u.audio_path
    if not path.exists():
        return None, "audio file not found"
    if path.is_dir():
        return None, "audio path is a directory"
    try:
        info = sf.info(str(path))
        frames, rate = info.frames, info.samplerate
    except (sf.SoundFileError, RuntimeError):
        # not something libsndfile knows (or not audio at all): decode it the way
        # training will, which also tries ffmpeg for m4a, mp4, webm, ...
        try:
            samples = load_audio(path)
        except AudioError as err:
            return None, err.reason
        frames, rate = len(samples), SAMPLE_RATE
    if frames <= 0:
        return None, "empty audio (0 samples)"
    return frames / rate, None
