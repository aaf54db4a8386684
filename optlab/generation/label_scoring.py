"""Classification by a causal language model: score each label's words after the text, pick the likeliest.

What "one large model for everything" does with a classification request: no classifier head, the
language model reads `text + cue` and each label's words are scored by the sum of their tokens'
log-probabilities there (one forward pass over the text followed by every label, batched).

    scorer = LabelScorer(lm.target, lm.tokenizer, ["app install", "lead generation", ...])
    payload = scorer.encode("download the acme app now")      # {"lm_ids": (1, L), "lm_length": (1,)}
    scorer.predict(payload)                                     # (1, C) log-likelihoods: argmax is the label

Payloads are arrays, so a batch `Server` batches them (`concat` pads `lm_ids` with zeros; `lm_length`
says where each row's text ends). The text is cut to its last `prompt_tokens` tokens, as a deployment
bounds a prompt.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CUE = "\nintent:"


class LabelScorer:
    """Label log-likelihoods of a causal LM (`transformers` model + its tokenizer); see the module."""

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str], *, prompt_tokens: int = 32,
                 cue: str = CUE):
        if len(labels) < 2:
            raise ValueError(f"LabelScorer needs >= 2 labels to choose between, got {list(labels)!r}")
        if int(prompt_tokens) != prompt_tokens or prompt_tokens < 1:
            raise ValueError(f"prompt_tokens must be an integer >= 1, got {prompt_tokens!r}")
        self.model, self.tokenizer, self.labels = model, tokenizer, list(labels)
        self.prompt_tokens = int(prompt_tokens)
        self.cue_ids = list(tokenizer.encode(cue))
        self.label_ids = [list(tokenizer.encode(" " + label)) for label in self.labels]
        if any(not ids for ids in self.label_ids):
            raise ValueError(f"a label encodes to no tokens: {self.labels!r}")

    def encode(self, text: str) -> dict[str, np.ndarray]:
        """One request's payload: the text's last `prompt_tokens` token ids, then the cue."""
        ids = list(self.tokenizer.encode(text))[-self.prompt_tokens:] + self.cue_ids
        return {"lm_ids": np.asarray([ids], dtype=np.int64), "lm_length": np.asarray([len(ids)], dtype=np.int64)}

    def predict(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C) float32: for each row, each label's summed token log-probability after the row's text."""
        import torch  # lazy: only a language-model deployment needs it

        ids, lengths = np.asarray(batch["lm_ids"]), np.asarray(batch["lm_length"]).reshape(-1)
        rows = [ids[i, :lengths[i]].tolist() + label for i in range(len(lengths)) for label in self.label_ids]
        width = max(map(len, rows))
        tokens = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            tokens[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=tokens, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t + 1
        scores = np.zeros((len(lengths), len(self.labels)), dtype=np.float32)
        for r in range(len(rows)):
            i, c = divmod(r, len(self.labels))
            start, label = int(lengths[i]), self.label_ids[c]
            positions = torch.arange(start - 1, start - 1 + len(label))
            scores[i, c] = float(logp[r, positions, torch.tensor(label)].sum())
        return scores
