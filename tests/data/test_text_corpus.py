"""The help-topics corpus: split by whole topics, deterministic, near its character shares, keyed on the text."""
import pytest

from optlab.data import text_corpus


def test_splits_are_disjoint_whole_topics_covering_the_source():
    corpus = text_corpus.load()
    source = text_corpus.source_topics()
    topics = [set(corpus.topics(name)) for name in text_corpus.SPLITS]
    assert set.union(*topics) == set(source) and sum(map(len, topics)) == len(source)
    assert all(doc.text == source[doc.topic] for name in text_corpus.SPLITS for doc in corpus.split(name))
    total = sum(map(len, source.values()))
    shares = [corpus.characters(name) / total for name in text_corpus.SPLITS]
    for share, wanted in zip(shares, text_corpus.FRACTIONS, strict=True):
        assert abs(share - wanted) < 0.04, shares
    assert [row["topics"] for row in corpus.summary()] == [len(t) for t in topics]


def test_the_split_is_seeded_and_the_fingerprint_follows_the_text():
    topics = {f"t{i:02d}": "x" * (50 + 7 * i) for i in range(30)}
    assert text_corpus.split_topics(topics, seed=1) == text_corpus.split_topics(dict(reversed(topics.items())), seed=1)
    assert text_corpus.split_topics(topics, seed=1) != text_corpus.split_topics(topics, seed=2)
    assert text_corpus.load().fingerprint == text_corpus.load().fingerprint
    assert text_corpus.load(seed=1).fingerprint != text_corpus.load().fingerprint


def test_bad_fractions_and_splits_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        text_corpus.load(fractions=(0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="valid splits: train, validation, test"):
        text_corpus.load().split("dev")
    with pytest.raises(ValueError, match="at least 3 topics"):
        text_corpus.split_topics({"a": "x", "b": "y"})


def test_windows_come_from_the_test_topics_and_repeat_with_the_seed():
    corpus = text_corpus.load()
    windows = text_corpus.test_windows(20, characters=300, seed=3)
    assert windows == text_corpus.test_windows(20, characters=300, seed=3) != text_corpus.test_windows(20, seed=4)
    texts = {doc.topic: doc.text for doc in corpus.test}
    assert all(len(text) == 300 and text in texts[topic] for topic, text in windows)
    with pytest.raises(ValueError, match="no test document is longer"):
        text_corpus.test_windows(1, characters=10**7)
