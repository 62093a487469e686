"""Sentences for the synthetic corpus: Debian's fortunes, normalised to speakable text.

A synthesiser reads exactly the string it is given, so the transcript can only be
trusted if every word in it is pronounced as written. The normaliser therefore keeps
a sentence only when every token becomes a plain lower-case word (letters and inner
apostrophes), after expanding what has one obvious reading (numbers, years, "%", "&",
common abbreviations) and drops the sentence otherwise (acronyms such as "IBM" that a
synthesiser spells out, URLs, code, words without vowels, foreign letters).

Each kept sentence has two forms:
- ``text``: the transcript, e.g. "well i'll be a monkey's uncle" (lower case, letters,
  apostrophes and single spaces), and
- ``spoken``: the same words with the original commas and final .?! kept, so the
  synthesiser's prosody follows the punctuation ("Well, i'll be a monkey's uncle!").
  Punctuation is never read aloud by the synthesisers used here.

When the fortunes run out, ``GrammarSentences`` generates new, varied sentences.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from asr.text.normalize import MAX_NUMBER, number_words, ordinal_words, year_words

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Not English prose: pictures made of characters, and Latin/French/German jokes.
SKIPPED_FORTUNE_FILES = {"ascii-art", "translate-me"}
MIN_WORDS = 3
MAX_WORDS = 25
MAX_WORD_LETTERS = 20  # longer "words" are run-together junk or chemical names

# Abbreviations with one reading, expanded before sentence splitting (their periods
# would otherwise end a sentence). Matched case-sensitively at word starts.
ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Ms.": "Miz", "Dr.": "Doctor", "St.": "Saint",
    "Jr.": "Junior", "Sr.": "Senior", "Prof.": "Professor", "Capt.": "Captain",
    "Gen.": "General", "Lt.": "Lieutenant", "Col.": "Colonel", "Sgt.": "Sergeant",
    "Mt.": "Mount", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "a.m.": "in the morning", "p.m.": "in the afternoon",
}  # fmt: skip
# number words a noun phrase may start with ("three cats": a plural subject)
_NUMBER_WORDS = frozenset(number_words(n) for n in range(20))
SYMBOL_WORDS = {"&": "and", "%": "percent", "+": "plus", "=": "equals", "@": "at"}

# ---------------------------------------------------------------------------- normalising

_WORD = re.compile(r"^[a-z]+(?:'[a-z]+)*$")
_VOWEL = re.compile(r"[aeiouy]")
_SINGLE_LETTER_WORDS = {"a", "i", "o"}  # others would be spelled as letter names
_INTEGER = re.compile(r"^\d{1,3}(?:,\d{3})+$|^\d+$")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_MONEY = re.compile(r"^\$(\d+(?:,\d{3})*)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_DECADE = re.compile(r"^(1[1-9]|20)([0-9])0'?s$")  # 1960s -> nineteen sixties
_NOT_PROSE = re.compile(r"https?:|www\.|\.com\b|\.org\b|[<>{}\[\]|\\^~#_=]|/|\w\(|\)\w|\w[;:]\w")
_PROSODY_MARKS = ",.?!;:"
_QUOTES = "\"'`\u2018\u2019\u201c\u201d()*"
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]*[A-Z])")


@dataclass(frozen=True)
class Sentence:
    text: str  # the transcript
    spoken: str  # what the synthesiser is given
    source: str  # "fortunes" or "grammar"


def _ascii_letters(text: str) -> str:
    """Fold accents (café -> cafe) and typographic quotes/dashes to ASCII."""
    if text.isascii():
        return text
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2014", " -- ").replace("\u2013", " - ").replace("\u2026", "...")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _number_token(token: str) -> Optional[str]:
    """Words for a numeric token, or None if it is not one we can read unambiguously."""
    if match := _MONEY.match(token):
        n = int(match.group(1).replace(",", ""))
        return None if n > MAX_NUMBER else number_words(n) + (" dollar" if n == 1 else " dollars")
    if match := _PERCENT.match(token):
        words = _number_token(match.group(1))
        return None if words is None else words + " percent"
    if match := _ORDINAL.match(token):
        n = int(match.group(1))
        return None if n > MAX_NUMBER else ordinal_words(n)
    if match := _DECADE.match(token):
        decade = int(match.group(1) + match.group(2) + "0")
        words = year_words(decade).split()
        if words[-1] == "hundred":  # 1900s -> "nineteen hundreds"
            return " ".join(words) + "s"
        words[-1] = words[-1][:-1] + "ies"  # sixty -> sixties
        return " ".join(words)
    if _DECIMAL.match(token):
        whole, frac = token.split(".")
        if int(whole) > MAX_NUMBER:
            return None
        return number_words(int(whole)) + " point " + " ".join(number_words(int(d)) for d in frac)
    if _INTEGER.match(token):
        plain = token.replace(",", "")
        n = int(plain)
        if n > MAX_NUMBER or (len(plain) > 1 and plain.startswith("0")):
            return None  # zip codes, phone numbers, "007": no single reading
        if "," not in token and 1100 <= n <= 2099:
            return year_words(n)  # a bare four-digit number in prose is nearly always a year
        return number_words(n)
    return None


def normalise_sentence(raw: str, source: str = "fortunes") -> Optional[Sentence]:
    """A Sentence if every token of ``raw`` can be made speakable, else None."""
    raw = _ascii_letters(raw)
    if not raw.isascii() or _NOT_PROSE.search(raw):
        return None
    raw = raw.replace("--", " , ").replace("...", " , ")
    raw = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", raw)  # well-known -> well known
    n_letters = len(re.findall(r"[A-Za-z]", raw))
    shouting = len(re.findall(r"[A-Z]", raw)) > 0.6 * n_letters  # all-caps prose, not acronyms

    words: list[str] = []
    spoken: list[str] = []
    for token in raw.split():
        token = token.strip(_QUOTES)
        mark = ""
        while token and token[-1] in _PROSODY_MARKS:
            mark = mark or token[-1]
            token = token[:-1].rstrip(_QUOTES)
        token = token.strip(_QUOTES)
        if not token:
            if mark and spoken and spoken[-1][-1] not in _PROSODY_MARKS:
                spoken[-1] += mark
            continue
        if token in SYMBOL_WORDS:
            expansion = SYMBOL_WORDS[token]
        elif any(c.isdigit() for c in token) or token.startswith("$"):
            expansion = _number_token(token)
            if expansion is None:
                return None
        else:
            # acronyms (IBM, TV) are spelled letter by letter by a synthesiser
            if not shouting and len(token) >= 2 and token.isupper():
                return None
            expansion = token.lower()
        for word in expansion.split():
            if not _WORD.match(word) or not _VOWEL.search(word) or len(word) > MAX_WORD_LETTERS:
                return None
            if len(word) == 1 and word not in _SINGLE_LETTER_WORDS:
                return None
            words.append(word)
            spoken.append(word)
        if mark:
            spoken[-1] += "," if mark in ";:" else mark
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    spoken_text = " ".join(spoken)
    if spoken_text[-1] not in ".?!":
        spoken_text = spoken_text.rstrip(",") + "."
    spoken_text = spoken_text[0].upper() + spoken_text[1:]  # synthesisers like a capital start
    return Sentence(" ".join(words), spoken_text, source)


# ---------------------------------------------------------------------------- fortunes


def _fortune_texts(directory: Path) -> Iterator[str]:
    """Each fortune of each file, attribution lines removed, whitespace collapsed."""
    for path in sorted(directory.iterdir()):
        if path.suffix or path.is_symlink() or not path.is_file() or path.name in SKIPPED_FORTUNE_FILES:
            continue  # *.dat indexes, *.u8 links
        content = path.read_bytes().decode("utf-8", errors="replace")
        content = re.sub(r".\x08", "", content)  # "overstriking": char + backspace (bold/underline)
        for fortune in re.split(r"^%\s*$", content, flags=re.MULTILINE):
            lines = [
                line for line in fortune.splitlines()
                if not re.match(r"^\s*(--|- |\u2014)", line)  # "    -- Mark Twain"
            ]  # fmt: skip
            text = " ".join(" ".join(lines).split())
            if text:
                yield text


_ABBREVIATION = re.compile(r"(?<![A-Za-z])(?:" + "|".join(map(re.escape, ABBREVIATIONS)) + ")")


def split_sentences(text: str) -> list[str]:
    text = _ABBREVIATION.sub(lambda m: ABBREVIATIONS[m.group(0)], text)
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def fortune_sentences(directory: Optional[Path] = None) -> list[Sentence]:
    """Unique speakable sentences from the fortune files, in file order."""
    directory = FORTUNE_DIR if directory is None else directory
    seen: set[str] = set()
    sentences = []
    if not directory.is_dir():
        return sentences
    for fortune in _fortune_texts(directory):
        for raw in split_sentences(fortune):
            sentence = normalise_sentence(raw)
            if sentence is not None and sentence.text not in seen:
                seen.add(sentence.text)
                sentences.append(sentence)
    return sentences


# ---------------------------------------------------------------------------- grammar

# A small generative grammar for when the fortunes run out. Its vocabulary (~900
# words) is broad on purpose: a decoder that sees the same few hundred words in every
# sentence learns a language model rather than listening.
_NAMES = """adam alice arthur barbara benjamin carol charles daniel david diana edward
elena emily frank george grace hannah harold helen henry isabel jack james jane jessica
john julia karen kevin laura linda lucy margaret maria mark martha mary matthew michael
nancy nora oliver patrick paul peter rachel rebecca richard robert rose samuel sarah
simon sophia steven susan thomas victor walter william""".split()
_NOUNS = """apple artist baby bag baker ball bank basket beach bear bed bell bicycle bird
blanket boat book bottle box boy bread bridge brother bucket building bus butter cake
camera candle captain car carpet cat chair cheese chicken child church city clock cloud
coat coffee computer cook corner cottage cousin cow cup curtain customer dancer daughter
desk doctor dog door dragon drawer dress driver drum duck eagle egg elephant engine
envelope factory farmer feather fence field fish flag flower forest fox friend frog
garden gate ghost giant girl glass goat guitar hammer hat horse hospital hotel house
island jacket jar judge kettle key king kitchen knife ladder lake lamp lawyer leaf letter
library lion lorry machine map market meadow mirror monkey moon mountain mouse museum
neighbour nurse ocean officer orange owl painter palace parcel parrot pencil piano
picture pilot plate poet pocket postman potato prince princess queen rabbit radio river
road robot rock roof sailor sandwich scientist sheep ship shoe shop singer sister soldier
spoon squirrel stone storm stranger street student sugar table teacher telephone tent
tiger tomato tower town toy tractor train tree truck tunnel turtle umbrella uncle valley
village violin visitor wagon wall wallet watch waterfall whale wheel window wizard wolf
writer""".split()
_PLURALS = {"child": "children", "mouse": "mice", "sheep": "sheep", "fish": "fish", "knife": "knives",
            "leaf": "leaves", "wolf": "wolves", "potato": "potatoes", "tomato": "tomatoes"}  # fmt: skip
_ADJECTIVES = """ancient angry bitter blue brave bright broken busy calm careful cheerful
clever cold comfortable crowded curious dark dusty eager early empty enormous famous
fancy fast fierce foolish fresh friendly gentle giant golden graceful green grumpy happy
heavy helpful hidden hollow honest huge hungry icy important jolly kind large lazy little
lonely loud lucky magnificent modern muddy mysterious narrow nervous new noisy odd old
orange patient peaceful pink plain polite poor proud purple quick quiet rapid red rich
rough round rusty sad shiny short shy silent silly slow small smooth soft sparkling
strange strong sturdy sunny sweet tall tidy tiny tired ugly untidy useful warm wet
white wide wild wise wooden yellow young""".split()
# (base, past, third person singular)
_TRANSITIVE = [tuple(v.split("/")) for v in """admire/admired/admires borrow/borrowed/borrows
build/built/builds buy/bought/buys carry/carried/carries catch/caught/catches
chase/chased/chases clean/cleaned/cleans climb/climbed/climbs collect/collected/collects
cook/cooked/cooks count/counted/counts cover/covered/covers draw/drew/draws
drop/dropped/drops fix/fixed/fixes follow/followed/follows find/found/finds
forget/forgot/forgets greet/greeted/greets guard/guarded/guards hide/hid/hides
hold/held/holds invite/invited/invites keep/kept/keeps kick/kicked/kicks lift/lifted/lifts
like/liked/likes lose/lost/loses love/loved/loves mend/mended/mends move/moved/moves
notice/noticed/notices open/opened/opens paint/painted/paints pass/passed/passes
photograph/photographed/photographs pick/picked/picks pull/pulled/pulls push/pushed/pushes
question/questioned/questions remember/remembered/remembers repair/repaired/repairs
rescue/rescued/rescues sell/sold/sells send/sent/sends share/shared/shares
show/showed/shows steal/stole/steals study/studied/studies surprise/surprised/surprises
take/took/takes teach/taught/teaches thank/thanked/thanks throw/threw/throws
touch/touched/touches visit/visited/visits wash/washed/washes watch/watched/watches
wrap/wrapped/wraps""".split()]
_INTRANSITIVE = [tuple(v.split("/")) for v in """arrive/arrived/arrives dance/danced/dances
disappear/disappeared/disappears fall/fell/falls laugh/laughed/laughs listen/listened/listens
rest/rested/rests run/ran/runs shout/shouted/shouts sing/sang/sings sleep/slept/sleeps
smile/smiled/smiles sneeze/sneezed/sneezes swim/swam/swims wait/waited/waits
walk/walked/walks whisper/whispered/whispers work/worked/works travel/travelled/travels
wander/wandered/wanders cry/cried/cries jump/jumped/jumps""".split()]
_ADVERBS = """quickly slowly quietly loudly carefully happily sadly suddenly gently
proudly nervously bravely eagerly patiently politely secretly calmly cheerfully
angrily kindly""".split()
_PLACES = """in the garden|near the river|at the market|behind the old barn|under the bridge|
on the hill|inside the museum|by the window|across the street|in the kitchen|at the
station|beside the lake|on the beach|in the forest|at the end of the road|outside the
library|in the village square|upstairs|downstairs|next door|on the roof|in the
cellar|at the harbour|by the fire""".replace("\n", " ").split("|")
_TIMES = """yesterday|this morning|last night|on monday|on tuesday|on wednesday|on
thursday|on friday|on saturday|on sunday|in the spring|in the summer|in the autumn|in
the winter|at midnight|after lunch|before breakfast|every evening|once a week|at dawn|a
long time ago|last year|tomorrow|later that day|at noon""".replace("\n", " ").split("|")
_CONNECTIVES = ["because", "although", "while", "after", "before", "when", "so", "but", "and"]
_REPORTING = ["said that", "thought that", "noticed that", "explained that", "wondered whether",
              "told us that", "heard that", "suspected that"]  # fmt: skip


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


class GrammarSentences:
    """An endless, seeded stream of grammatical English sentences.

    Sentence shapes include plain statements, clauses joined by connectives, reported
    speech, questions and counts (with numbers in words), so lengths run from about
    4 to 25 words. Duplicates are possible but rare; the caller deduplicates.
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([seed, 0x6A])

    def _pick(self, items):
        return items[self.rng.integers(len(items))]

    def _noun_phrase(self) -> str:
        if self.rng.random() < 0.25:
            return self._pick(_NAMES)
        noun = self._pick(_NOUNS)
        if self.rng.random() < 0.2:
            count = int(self.rng.integers(2, 13))
            plural = _PLURALS.get(noun) or _plural(noun)
            return f"{number_words(count)} {plural}"
        determiner = self._pick(["the", "the", "a", "my", "your", "our", "their", "that", "this"])
        if determiner == "a" and self.rng.random() < 0.6:
            adjective = self._pick(_ADJECTIVES)
            determiner = "an" if adjective[0] in "aeiou" else "a"
            return f"{determiner} {adjective} {noun}"
        if determiner == "a":
            determiner = "an" if noun[0] in "aeiou" else "a"
        if self.rng.random() < 0.5:
            return f"{determiner} {self._pick(_ADJECTIVES)} {noun}"
        return f"{determiner} {noun}"

    def _clause(self, tense: str) -> str:
        subject = self._noun_phrase()
        column = 1 if tense == "past" else 2
        plural_subject = subject.split()[0] in _NUMBER_WORDS
        if self.rng.random() < 0.65:
            verb = self._pick(_TRANSITIVE)
            verb_form = verb[0] if (tense == "present" and plural_subject) else verb[column]
            clause = f"{subject} {verb_form} {self._noun_phrase()}"
        else:
            verb = self._pick(_INTRANSITIVE)
            verb_form = verb[0] if (tense == "present" and plural_subject) else verb[column]
            clause = f"{subject} {verb_form}"
            if self.rng.random() < 0.5:
                clause += " " + self._pick(_ADVERBS)
        if self.rng.random() < 0.5:
            clause += " " + self._pick(_PLACES)
        return clause

    def _statement(self) -> str:
        tense = "past" if self.rng.random() < 0.6 else "present"
        shape = self.rng.random()
        if shape < 0.35:
            sentence = self._clause(tense)
            if self.rng.random() < 0.5:
                sentence = f"{self._pick(_TIMES)} {sentence}"
        elif shape < 0.7:
            sentence = f"{self._clause(tense)} {self._pick(_CONNECTIVES)} {self._clause(tense)}"
        elif shape < 0.85:
            sentence = f"{self._pick(_NAMES)} {self._pick(_REPORTING)} {self._clause('past')}"
        else:
            verb = self._pick(_TRANSITIVE)
            wh = self._pick(["did", "why did", "where did", "when did", "how did"])
            return f"{wh} {self._noun_phrase()} {verb[0]} {self._noun_phrase()}?"
        return sentence + "."

    def __iter__(self) -> Iterator[Sentence]:
        return self

    def __next__(self) -> Sentence:
        while True:
            raw = self._statement()
            sentence = normalise_sentence(raw, source="grammar")
            if sentence is not None:
                return sentence


def grammar_vocabulary() -> set[str]:
    """Every word the grammar can produce (for the dataset card)."""
    words: set[str] = set()
    for group in (_NAMES, _NOUNS, _ADJECTIVES, _ADVERBS, _CONNECTIVES):
        words.update(group)
    for verbs in (_TRANSITIVE, _INTRANSITIVE):
        for forms in verbs:
            words.update(forms)
    for phrases in (_PLACES, _TIMES, _REPORTING):
        for phrase in phrases:
            words.update(phrase.split())
    return words
