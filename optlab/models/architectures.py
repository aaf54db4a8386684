"""The reference model architectures: small CNN (digits), embedding + MLP (bids), small BERT (intents).

Each forward takes the dataset's input names as keyword arguments and returns a logits
tensor: (N, classes) for multiclass, (N,) for binary. All export with torch.onnx.export.
Imported lazily (it imports torch); build them through `optlab.models.zoo`.
"""
from __future__ import annotations

import torch
from torch import nn

from optlab.models.runtimes import quiet_torch_logs


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU blocks on 8x8 images (max-pool after the blocks in `pool_after`), then an MLP head."""

    def __init__(self, channels=(32, 64, 64), pool_after=(1, 2), hidden=128, num_classes=10, dropout=0.1):
        super().__init__()
        layers, c_in, side = [], 1, 8
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))


class ClickMLP(nn.Module):
    """One embedding per categorical field, concatenated with standardized numeric features, an MLP, one logit."""

    def __init__(self, cardinalities, numeric_mean, numeric_std, embed_dim=16, hidden=(256, 128), dropout=0.1):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(n, embed_dim) for n in cardinalities)
        for emb in self.embeddings:  # small init: rare ids start near zero instead of as N(0, 1) noise
            nn.init.normal_(emb.weight, std=0.05)
        self.register_buffer("numeric_mean", torch.tensor(numeric_mean, dtype=torch.float32))
        self.register_buffer("numeric_std", torch.tensor(numeric_std, dtype=torch.float32).clamp_min(1e-6))
        layers, width = [], embed_dim * len(cardinalities) + len(numeric_mean)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        embedded = [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        numeric = (numeric - self.numeric_mean) / self.numeric_std
        return self.mlp(torch.cat([*embedded, numeric], dim=1)).squeeze(-1)


class BertClassifier(nn.Module):
    """A Hugging Face BertForSequenceClassification (built from a BertConfig, no download) returning logits."""

    def __init__(self, vocab_size, num_classes, layers=4, hidden=128, heads=4, intermediate=None, max_length=128,
                 dropout=0.1, attn_implementation="sdpa"):
        super().__init__()
        # transformers is optional and heavy (intents only). Its first import also imports torchao (through
        # its quantizers), whose PyPI wheel is the CUDA build: on a CPU torch its two CUDA extensions fail to
        # load with a warning each, and its enums trip torch's pytree deprecation; none of that touches the
        # CPU paths used here, so that import runs quieted (the loggers are restored right after).
        with quiet_torch_logs():
            from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                            max_position_embeddings=max_length, type_vocab_size=1, pad_token_id=0,
                            hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, num_labels=num_classes)
        config._attn_implementation = attn_implementation
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


ARCHITECTURES = {"digits": DigitsCNN, "bids": ClickMLP, "intents": BertClassifier}
