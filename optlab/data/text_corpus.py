"""The language-model text corpus: Python's own help topics (`pydoc_data.topics`), split by topic.

Every CPython ships the text of `help("TOPIC")` as a dict of 79 topics (~465k characters on
3.11.7), so the language-model lessons need no download. The text changes between CPython
releases, so everything cached from it (tokenizer, trained models) is keyed on `fingerprint`, the
sha256 of the text itself, never on the Python version.

    corpus = load()                       # TextCorpus: train / validation / test documents
    corpus.text("train")                  # one split's documents joined by blank lines
    windows = test_windows(8, characters=400, seed=0)   # raw material for a request trace

The split is *by topic* (a whole document goes to one split), so the test perplexity measures text
the model never saw, not a neighbouring paragraph of a topic it trained on. It is deterministic:
topic names sorted, shuffled by a seeded generator, then each topic goes to the split furthest
below its share of the characters (80/10/10 by default).

Prompts for a generation trace come in two steps because tokens belong to the models layer:
`test_windows` (here) cuts character windows from the test topics, and
`optlab.models.language.test_prompts(tokenizer, n, prompt_tokens, seed)` cuts token windows and
draws each request's output length from the test text itself (the tokens to the paragraph's end).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from optlab.data.hashing import sha256_json

SPLITS = ("train", "validation", "test")
FRACTIONS = (0.8, 0.1, 0.1)
SEED = 0
SEPARATOR = "\n\n"  # between documents when a split is read as one text


@dataclass(frozen=True)
class Document:
    """One help topic: its name and text."""

    topic: str
    text: str


@dataclass(frozen=True)
class TextCorpus:
    """The three splits as tuples of documents, and the fingerprint of the source text."""

    train: tuple[Document, ...]
    validation: tuple[Document, ...]
    test: tuple[Document, ...]
    fingerprint: str  # sha256 of the topics (names and texts) and the split settings
    source: str = "pydoc_data.topics"

    def split(self, name: str) -> tuple[Document, ...]:
        """The documents of split `name` ("train", "validation" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        return getattr(self, name)

    def text(self, name: str) -> str:
        """Split `name` as one text, documents separated by a blank line."""
        return SEPARATOR.join(doc.text for doc in self.split(name))

    def topics(self, name: str) -> tuple[str, ...]:
        return tuple(doc.topic for doc in self.split(name))

    def characters(self, name: str) -> int:
        return sum(len(doc.text) for doc in self.split(name))

    def summary(self) -> list[dict]:
        """One row per split: topics and characters (a tidy table's records)."""
        return [{"split": name, "topics": len(self.split(name)), "characters": self.characters(name)}
                for name in SPLITS]


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions={fractions!r} must be three positive shares of train, validation and test "
                         f"that sum to 1 (e.g. (0.8, 0.1, 0.1))")


def split_topics(topics: dict[str, str], fractions: tuple[float, float, float] = FRACTIONS,
                 seed: int = SEED) -> dict[str, tuple[str, ...]]:
    """{split: topic names}: sorted names in a seeded order, each to the split furthest below its share
    of the characters (so the shares hold by characters, not by topic count)."""
    _check_fractions(fractions)
    if len(topics) < 3:
        raise ValueError(f"need at least 3 topics to split into {', '.join(SPLITS)}; got {len(topics)}")
    names = sorted(topics)
    order = np.random.default_rng(seed).permutation(len(names))
    total = sum(len(text) for text in topics.values())
    filled = dict.fromkeys(SPLITS, 0)
    chosen: dict[str, list[str]] = {name: [] for name in SPLITS}
    for index in order:
        name = names[index]
        target = max(SPLITS, key=lambda s: fractions[SPLITS.index(s)] * total - filled[s])
        chosen[target].append(name)
        filled[target] += len(topics[name])
    if not all(chosen.values()):
        raise ValueError(f"{len(topics)} topics cannot fill every split at fractions {fractions}; use more topics")
    return {name: tuple(sorted(chosen[name])) for name in SPLITS}


def source_topics() -> dict[str, str]:
    """The installed Python's help topics, {name: text}."""
    from pydoc_data import topics  # stdlib; imported here so importing optlab.data does not read 465k of text

    return dict(topics.topics)


@functools.lru_cache(maxsize=4)
def _load(fractions: tuple[float, float, float], seed: int) -> TextCorpus:
    topics = source_topics()
    parts = split_topics(topics, fractions, seed)
    fingerprint = sha256_json({"topics": topics, "fractions": fractions, "seed": seed})
    docs = {name: tuple(Document(topic, topics[topic]) for topic in parts[name]) for name in SPLITS}
    return TextCorpus(docs["train"], docs["validation"], docs["test"], fingerprint)


def load(fractions: tuple[float, float, float] = FRACTIONS, seed: int = SEED) -> TextCorpus:
    """The corpus of this Python's help topics, split by topic (see the module docstring)."""
    return _load(tuple(float(f) for f in fractions), int(seed))


def test_windows(n: int, *, characters: int = 400, seed: int = 0, split: str = "test",
                 corpus: TextCorpus | None = None) -> list[tuple[str, str]]:
    """`n` (topic, text) windows of `characters` characters from `split`'s documents, each document
    chosen with probability proportional to its length and the start drawn uniformly (seeded)."""
    if n < 1 or characters < 1:
        raise ValueError(f"n={n!r} and characters={characters!r} must both be >= 1")
    docs = (corpus or load()).split(split)
    usable = [doc for doc in docs if len(doc.text) > characters]
    if not usable:
        raise ValueError(f"no {split} document is longer than characters={characters}; ask for shorter windows")
    rng = np.random.default_rng(seed)
    weights = np.array([len(doc.text) - characters for doc in usable], dtype=float)
    picks = rng.choice(len(usable), size=n, p=weights / weights.sum())
    out = []
    for pick in picks:
        doc = usable[int(pick)]
        start = int(rng.integers(0, len(doc.text) - characters + 1))
        out.append((doc.topic, doc.text[start:start + characters]))
    return out
