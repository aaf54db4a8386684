"""Small causal language models trained here: a byte-level BPE tokenizer, a Llama-style target and
a draft that share it, their training loop and their token log-likelihood.

    tokenizer = tokenizer_from_json(train_tokenizer(corpus.text("train")))
    model = build(TARGET, tokenizer)                        # transformers.LlamaForCausalLM, no hub
    log = train_lm(model, encode_split(tokenizer, corpus, "train"), TRAINING[False])
    perplexity(model, windows(encode_split(tokenizer, corpus, "validation"), 128))

Llama-style (RMSNorm, rotary positions, SwiGLU, plain `nn.Linear` layers) rather than GPT-2 because
the real engines and the weight-only quantizers handle its layers. `optlab.models.zoo.language_models`
trains both once and caches them; this module has no cache of its own.

`test_prompts(tokenizer, n, prompt_tokens, seed)` is the raw material of a generation trace: token
windows from the test topics and, for each, an output length read from the text (the tokens to the end
of the paragraph the prompt stops in, clipped to [min_new_tokens, max_new_tokens]).

torch, transformers and tokenizers are imported where used: the zoo imports this module for its
settings, and those must not cost a process the import of all three.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from optlab.data.text_corpus import TextCorpus, load
from optlab.models.runtimes import quiet_torch_logs


def _transformers(name: str):
    """`transformers.<name>`, imported where used (torch, transformers and tokenizers are heavy) and
    quietly: transformers' first import loads torchao (see models.architectures.BertClassifier)."""
    import importlib

    with quiet_torch_logs():
        return getattr(importlib.import_module("transformers"), name)


EOS = "<|endoftext|>"
VOCAB_SIZE = 2048


@dataclass(frozen=True)
class LMSpec:
    """The shape of one causal LM (a `transformers.LlamaConfig` without the vocabulary)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    max_positions: int = 1024  # prompts plus 256+ generated tokens fit

    def config(self, vocab_size: int, eos_token_id: int = 0):
        llama_config = _transformers("LlamaConfig")
        return llama_config(vocab_size=vocab_size, hidden_size=self.hidden, intermediate_size=self.intermediate,
                            num_hidden_layers=self.layers, num_attention_heads=self.heads,
                            num_key_value_heads=self.kv_heads, max_position_embeddings=self.max_positions,
                            tie_word_embeddings=True, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                            pad_token_id=eos_token_id, attn_implementation="sdpa")


TARGET = LMSpec("target", layers=4, hidden=256, heads=4, kv_heads=4, intermediate=688)
DRAFT = LMSpec("draft", layers=1, hidden=128, heads=2, kv_heads=2, intermediate=344)


@dataclass(frozen=True)
class TrainSettings:
    """One training run: `steps` AdamW steps of `batch_size` packed windows of `seq_len` tokens.

    threads: torch threads while training; fixed (not the machine's core count) so that the same
    settings give the same weights everywhere, as the other zoo models do. eval_windows: how many
    validation windows the reported perplexity reads (None: all)."""

    steps: int
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    clip_grad_norm: float = 1.0
    threads: int = 2
    seed: int = 0
    eval_windows: int | None = None

    @property
    def tokens(self) -> int:
        """Tokens one run reads (steps x batch x sequence)."""
        return self.steps * self.batch_size * self.seq_len


# Step counts sized for 2 idle cores, measured as CPU time under load (training's only honest clock on a
# shared machine): ~600 target and ~3,100 draft tokens per CPU-second, so about 1,200 and 6,000 tokens/s on
# two threads. Full: ~147k target + ~115k draft tokens, ~245 + ~40 CPU-seconds, about 2.5 min on two
# cores with the validation pass, under the 3-minute budget; most of it goes to the target so that it ends
# better than the draft (validation perplexity, measured: 128 target steps at 2e-3 gave 276, 144 at 3e-3 gave
# 311; the draft's 112 steps at 3e-3 gave 384). Smoke: a few thousand tokens each, under 20 s.
TRAINING = {
    (TARGET.name, False): TrainSettings(steps=144, batch_size=8, seq_len=128, lr=2e-3),
    (DRAFT.name, False): TrainSettings(steps=112, batch_size=8, seq_len=128, lr=3e-3),
    (TARGET.name, True): TrainSettings(steps=6, batch_size=4, seq_len=64, lr=3e-3, eval_windows=4),
    (DRAFT.name, True): TrainSettings(steps=12, batch_size=4, seq_len=64, lr=3e-3, eval_windows=4),
}
EVAL_LENGTH = 128  # tokens per validation/test window


@dataclass(frozen=True)
class LanguageModels:
    """What `optlab.models.zoo.language_models` returns: the trained target and draft (eval mode, fp32),
    their shared tokenizer, and each one's validation perplexity (token-weighted, windows of
    `EVAL_LENGTH` tokens within the validation topics). `log`: training records (steps, seconds,
    tokens/s, losses) per model, and the corpus fingerprint the cache was keyed on."""

    target: Any
    draft: Any
    tokenizer: Any
    target_perplexity: float
    draft_perplexity: float
    log: dict


# --- tokenizer -------------------------------------------------------------------------

def train_tokenizer(text: str, vocab_size: int = VOCAB_SIZE) -> str:
    """A byte-level BPE tokenizer trained on `text`, as its JSON (deterministic: the same text gives the
    same JSON in any fresh process). The end-of-text token is id 0; every byte is in the vocabulary,
    so any text encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise ValueError(f"vocab_size={vocab_size} must be >= 300 (256 bytes, the end token and some merges)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer=trainer)
    return tokenizer.to_str()


def tokenizer_from_json(text: str):
    """The tokenizer JSON of `train_tokenizer` as a transformers `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer

    fast_tokenizer = _transformers("PreTrainedTokenizerFast")
    return fast_tokenizer(tokenizer_object=Tokenizer.from_str(text), eos_token=EOS, bos_token=EOS,
                          pad_token=EOS, unk_token=None, clean_up_tokenization_spaces=False)


def encode_split(tokenizer, corpus: TextCorpus | None, split: str) -> list[np.ndarray]:
    """Each document of `split` as token ids (int64), one array per document."""
    corpus = corpus or load()
    return [np.asarray(tokenizer(doc.text)["input_ids"], dtype=np.int64) for doc in corpus.split(split)]


# --- models ----------------------------------------------------------------------------

def build(spec: LMSpec, tokenizer_or_vocab, seed: int = 0):
    """An untrained `LlamaForCausalLM` of `spec` (weights from `seed`, the caller's RNG untouched)."""
    import torch

    llama = _transformers("LlamaForCausalLM")
    vocab = tokenizer_or_vocab if isinstance(tokenizer_or_vocab, int) else len(tokenizer_or_vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = llama(spec.config(vocab))
    model.optlab_spec = asdict(spec)
    return model.eval()


def param_count(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _stream(documents: list[np.ndarray], eos_id: int) -> np.ndarray:
    """The documents packed into one stream, an end-of-text token after each."""
    parts = []
    for doc in documents:
        parts += [doc, np.array([eos_id], dtype=np.int64)]
    return np.concatenate(parts)


def _schedule(settings: TrainSettings):
    warmup = max(1, int(settings.warmup_fraction * settings.steps))

    def factor(step: int) -> float:  # linear warmup, then cosine down to a tenth of the rate
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, settings.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train_lm(model, documents: list[np.ndarray], settings: TrainSettings, eos_id: int = 0) -> dict[str, Any]:
    """Train `model` in place on random packed windows of the documents (AdamW, warmup + cosine).

    Returns the log: losses every step, tokens/s and seconds. Torch's thread count and RNG are
    restored afterwards."""
    import torch

    stream = torch.from_numpy(_stream(documents, eos_id))
    if len(stream) <= settings.seq_len + 1:
        raise ValueError(f"{len(stream)} training tokens cannot fill one window of seq_len={settings.seq_len}")
    previous = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            return _train_steps(model, stream, settings)
    finally:
        torch.set_num_threads(previous)
        model.eval()


def _train_steps(model, stream, settings: TrainSettings) -> dict[str, Any]:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay,
                                  betas=(0.9, 0.95), fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    generator = torch.Generator().manual_seed(settings.seed)
    offsets = torch.arange(settings.seq_len + 1)
    losses = []
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(settings.steps):
        starts = torch.randint(0, len(stream) - settings.seq_len - 1, (settings.batch_size,), generator=generator)
        batch = stream[starts[:, None] + offsets]
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        # labels shift inside the model: predicting token t+1 from tokens <= t of the same window
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU seconds as well as wall seconds: on a shared machine the wall clock counts other work too, and
    # tokens per CPU-second x threads is what the same run gets from its own idle cores
    return {"losses": losses, "seconds": seconds, "cpu_seconds": cpu_seconds, "tokens": settings.tokens,
            "tokens_per_s": settings.tokens / seconds if seconds > 0 else None,
            "tokens_per_cpu_s": settings.tokens / cpu_seconds if cpu_seconds > 0 else None,
            "threads": settings.threads, "steps": settings.steps}


# --- likelihood ------------------------------------------------------------------------

def windows(documents: list[np.ndarray], length: int, limit: int | None = None) -> list[np.ndarray]:
    """Non-overlapping windows of at most `length` tokens, never across documents (a document's tail
    shorter than `length` is its own window when it has two tokens or more); the first `limit` only."""
    if length < 2:
        raise ValueError(f"length={length} must be >= 2: a window predicts its tokens after the first")
    out = [doc[start:start + length] for doc in documents for start in range(0, len(doc), length)]
    out = [w for w in out if len(w) >= 2]
    return out if limit is None else out[:limit]


def token_nll(model, windows_: list[np.ndarray], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the summed negative log-likelihood (nats) of its tokens after the first, and how
    many tokens that is. Windows of equal length run together; nothing is padded."""
    import torch

    sums = np.zeros(len(windows_))
    counts = np.array([len(w) - 1 for w in windows_], dtype=np.int64)
    by_length: dict[int, list[int]] = {}
    for index, window in enumerate(windows_):
        by_length.setdefault(len(window), []).append(index)
    with torch.inference_mode():
        for indices in by_length.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                ids = torch.from_numpy(np.stack([windows_[i] for i in chunk]))
                logits = model(input_ids=ids).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                sums[chunk] = nll.sum(dim=1).double().numpy()
    return sums, counts


def perplexity(model, windows_: list[np.ndarray], batch_size: int = 16) -> float:
    """exp(total NLL / total predicted tokens) over the windows (token-weighted)."""
    sums, counts = token_nll(model, windows_, batch_size)
    return float(math.exp(sums.sum() / counts.sum()))


# --- a generation trace's raw material ------------------------------------------------

@dataclass(frozen=True)
class PromptSample:
    """One request's material: a prompt of token ids cut from a test topic, and how many tokens to
    generate (the tokens from the prompt's end to the end of its paragraph, clipped)."""

    topic: str
    prompt_ids: tuple[int, ...]
    output_tokens: int


def _prompt_lengths(prompt_tokens: int | tuple[int, int], n: int, rng: np.random.Generator) -> np.ndarray:
    low, high = (prompt_tokens, prompt_tokens) if isinstance(prompt_tokens, int) else prompt_tokens
    if not 1 <= low <= high:
        raise ValueError(f"prompt_tokens={prompt_tokens!r} must be a length >= 1 or a range (low, high), low <= high")
    return rng.integers(low, high + 1, size=n)


def test_prompts(tokenizer, n: int, prompt_tokens: int | tuple[int, int] = 64, seed: int = 0, *,
                 min_new_tokens: int = 8, max_new_tokens: int = 256, split: str = "test",
                 corpus: TextCorpus | None = None) -> list[PromptSample]:
    """`n` prompts of `prompt_tokens` tokens (or a length drawn uniformly from a (low, high) range) from
    `split`'s topics, each with an output length read from the text: the tokens to the end of the
    paragraph the prompt stops in, clipped to [min_new_tokens, max_new_tokens]. Seeded: the same
    arguments give the same samples. Documents are chosen in proportion to their length."""
    if n < 1 or not 1 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"n={n!r} must be >= 1 and 1 <= min_new_tokens={min_new_tokens} <= "
                         f"max_new_tokens={max_new_tokens}")
    rng = np.random.default_rng(seed)
    lengths = _prompt_lengths(prompt_tokens, n, rng)
    encoded = [(doc, tokenizer(doc.text, return_offsets_mapping=True)) for doc in (corpus or load()).split(split)]
    out = []
    for length in lengths:
        sizes = np.array([max(0, len(enc["input_ids"]) - int(length)) for _, enc in encoded], dtype=float)
        if not sizes.sum():
            raise ValueError(f"no {split} document has more than {int(length)} tokens; ask for shorter prompts")
        doc, enc = encoded[int(rng.choice(len(encoded), p=sizes / sizes.sum()))]
        start = int(rng.integers(0, len(enc["input_ids"]) - int(length)))
        stop = start + int(length)
        prompt_end = enc["offset_mapping"][stop - 1][1]
        paragraph_end = doc.text.find("\n\n", prompt_end)
        paragraph_end = len(doc.text) if paragraph_end < 0 else paragraph_end
        rest = sum(1 for begin, _ in enc["offset_mapping"][stop:] if begin < paragraph_end)
        out.append(PromptSample(doc.topic, tuple(enc["input_ids"][start:stop]),
                                int(np.clip(rest, min_new_tokens, max_new_tokens))))
    return out


def trace_prompts(tokenizer, split: str = "test", corpus: TextCorpus | None = None):
    """`test_prompts` as a generation trace's prompt source: a function `(rng, n, spec=None) ->
    [(prompt_ids, output_tokens)]` that takes its seed from `rng` and, when `spec` has them, its prompt
    length range (`spec.prompt_tokens`, a (low, high) pair) and output length bounds (`spec.output_tokens`)."""
    def source(rng: np.random.Generator, n: int, spec: Any = None) -> list[tuple[list[int], int]]:
        low, high = getattr(spec, "output_tokens", (8, 256))
        samples = test_prompts(tokenizer, n, tuple(getattr(spec, "prompt_tokens", (16, 64))),
                               int(rng.integers(2**31)), min_new_tokens=int(low), max_new_tokens=int(high),
                               split=split, corpus=corpus)
        return [(list(s.prompt_ids), s.output_tokens) for s in samples]

    return source
