"""Shared fixtures: a session-private optlab cache and the smoke datasets/models, built once per session.

Fixture names (all smoke settings, session scope): `digits_data`, `bids_data`, `intents_data`
(optlab.data.Dataset) and `digits_model`, `bids_model`, `intents_model` (trained teacher
nn.Modules from optlab.models.zoo, eval mode). `optlab_cache` is the session cache folder;
`offline` refuses every non-loopback connection for the whole session.
"""
from __future__ import annotations

import os
import signal
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def offline():
    """No test reaches the network: every socket connection except to loopback raises
    (HF_HUB_OFFLINE alone is a promise of the libraries, not a guarantee)."""
    from optlab.testing.tiny_text import no_network

    with no_network():
        yield


@pytest.fixture(autouse=True)
def ctrl_c_as_found(request):
    """Ctrl-C handling is process-wide: a test (or a library it drives) that leaves SIGINT ignored or
    blocked makes every later Ctrl-C test, and every subprocess started after it (they inherit both),
    deaf to SIGINT. Put back what was there and name the test that changed it."""
    handler, mask = signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    now_handler, now_mask = signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])
    if now_handler is not handler or now_mask != mask:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        warnings.warn(f"{request.node.nodeid} left SIGINT as {now_handler!r} (blocked: "
                      f"{signal.SIGINT in now_mask}); put back", RuntimeWarning, stacklevel=1)


@pytest.fixture(scope="session", autouse=True)
def optlab_cache(tmp_path_factory):
    """Point OPTLAB_CACHE at a session temp dir so tests never read or write the user's cache."""
    path = tmp_path_factory.mktemp("optlab-cache")
    previous = os.environ.get("OPTLAB_CACHE")
    os.environ["OPTLAB_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("OPTLAB_CACHE", None)
    else:
        os.environ["OPTLAB_CACHE"] = previous


@pytest.fixture(scope="session")
def digits_data(optlab_cache):
    from optlab.data.datasets import load

    return load("digits", smoke=True)


@pytest.fixture(scope="session")
def bids_data(optlab_cache):
    from optlab.data.datasets import load

    return load("bids", smoke=True)


@pytest.fixture(scope="session")
def intents_data(optlab_cache):
    from optlab.data.datasets import load

    return load("intents", smoke=True)


@pytest.fixture(scope="session")
def digits_model(digits_data):
    from optlab.models import zoo

    return zoo.get("digits", "teacher", smoke=True, data=digits_data)


@pytest.fixture(scope="session")
def bids_model(bids_data):
    from optlab.models import zoo

    return zoo.get("bids", "teacher", smoke=True, data=bids_data)


@pytest.fixture(scope="session")
def intents_model(intents_data):
    from optlab.models import zoo

    return zoo.get("intents", "teacher", smoke=True, data=intents_data)


@pytest.fixture(scope="session")
def tiny_digits():
    from optlab.testing.tiny import digits_dataset, digits_model, trained

    data = digits_dataset(rows=900)
    # 6 epochs: logits decisive (scale ~1); after 2 they were ~0.3 and top-1 agreement was a coin toss on near-ties.
    # Initial weights seeded (the same in any test order). Static int8's max abs error over the first 128 test
    # rows depends on them: 0.19, 0.12, 0.05, 0.01, 0.02, 0.01 of the logit scale for seeds 0-5.
    return trained(digits_model(width=32, seed=2), data, epochs=6), data


@pytest.fixture(scope="session")
def tiny_bids():
    from optlab.testing.tiny import bids_dataset, bids_model, trained

    data = bids_dataset(rows=2000, vocab=(2000, 500, 50), numeric=4)
    return trained(bids_model(vocab=(2000, 500, 50), numeric=4, dim=16, width=32), data, epochs=1), data
