"""An analyst's transformer in miniature, for tests: a 2-layer, 32-wide BERT sequence classifier
with a tiny WordPiece tokenizer, both written with save_pretrained into a folder, a CSV of short
texts with labels named as in the model's id2label, and a guard that refuses every non-loopback
connection (HF_HUB_OFFLINE alone is not a guarantee that nothing reaches the hub)."""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import numpy as np

from optlab.models.runtimes import quiet_torch_logs

# torch and transformers are imported inside the builders: heavy optional dependencies.

LABELS = ("billing", "refund", "greeting")
WORDS = {
    "billing": ("invoice", "charge", "bill", "card", "payment", "price"),
    "refund": ("refund", "return", "money", "back", "cancel", "order"),
    "greeting": ("hello", "hi", "thanks", "morning", "good", "there"),
}
FILLER = ("my", "the", "please", "i", "want", "a", "for", "is", "was", "this", "about", "can", "you", "help")


def tiny_tokenizer(folder: Path):
    """A lower-casing BertTokenizerFast over this module's words (plus letters as word pieces),
    its vocab.txt written into `folder`; 64 tokens at most."""
    with quiet_torch_logs():  # transformers' first import loads torchao: see models.architectures.BertClassifier
        from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for ws in WORDS.values() for w in ws}),
             *FILLER, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), *"abcdefghijklmnopqrstuvwxyz.,?!"]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=64)


def tiny_bert_folder(folder: Path, *, seed: int = 0, layers: int = 2, hidden: int = 32, steps: int = 80) -> Path:
    """save_pretrained a BertForSequenceClassification (3 labels, weights from `seed`, trained for
    `steps` Adam steps on `texts_frame` rows so that its classes mean something; about a second)
    and `tiny_tokenizer` into `folder`."""
    import torch

    with quiet_torch_logs():  # transformers' first import loads torchao: see models.architectures.BertClassifier
        from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    tokenizer = tiny_tokenizer(folder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64,
                        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                        label2id={name: i for i, name in enumerate(LABELS)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and fair to a shared machine
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForSequenceClassification(config)
            frame = texts_frame(256, seed=seed + 1)
            encoded = tokenizer(list(frame["text"]), padding=True, return_tensors="pt")
            targets = torch.tensor([LABELS.index(v) for v in frame["label"]])
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            for step in range(steps):
                rows = torch.arange(step * 32, step * 32 + 32) % len(targets)
                loss = model(**{k: v[rows] for k, v in encoded.items()}, labels=targets[rows]).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def texts_frame(rows: int = 64, *, seed: int = 0):
    """A DataFrame of `rows` short texts (2..20 words, long-tailed) with a `label` column (names)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(rows):
        label = LABELS[int(rng.integers(len(LABELS)))]
        count = int(min(2 + rng.geometric(0.25), 20))
        words = [str(rng.choice(WORDS[label])) if rng.random() < 0.5 else str(rng.choice(FILLER))
                 for _ in range(count)]
        texts.append(" ".join(words))
        labels.append(label)
    return pd.DataFrame({"id": np.arange(rows), "text": texts, "label": labels})


def texts_csv(path: Path, rows: int = 64, *, seed: int = 0) -> Path:
    texts_frame(rows, seed=seed).to_csv(path, index=False)
    return Path(path)


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@contextlib.contextmanager
def no_network():
    """While inside, socket.connect to anything but loopback (or a Unix socket) raises."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in LOOPBACK and self.family != socket.AF_UNIX:
            raise ConnectionRefusedError(f"test blocked a network connection to {address!r}")
        return real_connect(self, address)

    socket.socket.connect = guarded
    try:
        yield
    finally:
        socket.socket.connect = real_connect
