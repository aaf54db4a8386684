"""Language models: a deterministic byte-level BPE tokenizer, Llama-style models built without the hub,
a training loop that lowers the loss, token log-likelihoods equal to a hand computation, and the zoo's cache."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from optlab.data import text_corpus
from optlab.models import language, zoo

TRAIN_AND_PRINT = ("import sys; from optlab.data.text_corpus import load; from optlab.models.language import "
                   "train_tokenizer; sys.stdout.write(train_tokenizer(load().text('train'), 600))")


def test_the_tokenizer_is_the_same_from_two_fresh_processes():
    runs = [subprocess.run([sys.executable, "-c", TRAIN_AND_PRINT], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and '"<|endoftext|>"' in runs[0]
    tokenizer = language.tokenizer_from_json(runs[0])
    assert len(tokenizer) == 600 and tokenizer.eos_token_id == 0
    text = "def f(x):\n    return x ** 2  # é ∑"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: every text round-trips


def test_a_small_vocabulary_is_refused():
    with pytest.raises(ValueError, match="vocab_size=100 must be >= 300"):
        language.train_tokenizer("abc", 100)


def test_specs_build_llama_models_of_their_shape():
    target, draft = language.build(language.TARGET, 2048), language.build(language.DRAFT, 2048)
    assert type(target).__name__ == "LlamaForCausalLM" and target.config.num_hidden_layers == 4
    assert target.config.hidden_size == 256 and draft.config.num_hidden_layers < target.config.num_hidden_layers
    assert language.param_count(draft) < language.param_count(target) / 4
    assert not target.training
    same = language.build(language.DRAFT, 2048)
    assert all(torch.equal(a, b) for a, b in zip(draft.state_dict().values(), same.state_dict().values(), strict=True))


def _tiny(seed=0):
    spec = language.LMSpec("tiny", layers=1, hidden=32, heads=4, kv_heads=2, intermediate=64, max_positions=256)
    return language.build(spec, 96, seed=seed)


def test_token_nll_is_the_hand_computed_cross_entropy():
    model = _tiny()
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 96, size=n) for n in (50, 9, 1)]
    windows = language.windows(docs, 16)
    assert [len(w) for w in windows] == [16, 16, 16, 2, 9]  # the 1-token document predicts nothing
    sums, counts = language.token_nll(model, windows, batch_size=2)
    with torch.inference_mode():
        for window, total, count in zip(windows, sums, counts, strict=True):
            ids = torch.from_numpy(window)[None]
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            assert count == len(window) - 1
            assert total == pytest.approx(-logp[torch.arange(count), ids[0, 1:]].sum().item(), rel=1e-4)
    assert language.perplexity(model, windows) == pytest.approx(np.exp(sums.sum() / counts.sum()))
    with pytest.raises(ValueError, match="length=1 must be >= 2"):
        language.windows(docs, 1)


def test_training_lowers_the_loss_and_restores_threads():
    model = _tiny()
    docs = [np.tile(np.arange(20), 30)]  # a repeating sequence: learnable in a few steps
    threads = torch.get_num_threads()
    before = language.perplexity(model, language.windows(docs, 32))
    log = language.train_lm(model, docs, language.TrainSettings(steps=30, batch_size=4, seq_len=32, lr=1e-2,
                                                                  threads=1))
    assert torch.get_num_threads() == threads and not model.training
    assert log["steps"] == 30 and log["tokens"] == 30 * 4 * 32 and log["tokens_per_cpu_s"] > 0
    assert language.perplexity(model, language.windows(docs, 32)) < before / 2
    with pytest.raises(ValueError, match="cannot fill one window"):
        language.train_lm(model, [np.arange(5)], language.TrainSettings(steps=1, seq_len=32))


def test_the_zoo_trains_once_and_loads_from_the_cache():
    before = zoo.LANGUAGE_TRAINED[True]
    first = zoo.language_models(smoke=True)
    again = zoo.language_models(smoke=True)
    assert zoo.LANGUAGE_TRAINED[True] - before <= 1
    assert again.target_perplexity == first.target_perplexity and 1 < first.target_perplexity < len(first.tokenizer)
    assert 1 < first.draft_perplexity < len(first.tokenizer)
    assert first.log["corpus"] == text_corpus.load().fingerprint and first.log["target"]["steps"] > 0
    ids = first.tokenizer("for x in y:", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(first.target(input_ids=ids).logits, again.target(input_ids=ids).logits)
        assert again.draft(input_ids=ids).logits.shape[-1] == len(again.tokenizer)


def test_prompts_are_test_topic_windows_with_paragraph_lengths():
    tokenizer = language.tokenizer_from_json(language.train_tokenizer(text_corpus.load().text("train"), 600))
    samples = language.test_prompts(tokenizer, 12, prompt_tokens=(16, 48), seed=5, max_new_tokens=64)
    assert samples == language.test_prompts(tokenizer, 12, prompt_tokens=(16, 48), seed=5, max_new_tokens=64)
    test_topics = {doc.topic: doc.text for doc in text_corpus.load().test}
    for sample in samples:
        assert sample.topic in test_topics and 16 <= len(sample.prompt_ids) <= 48
        assert tokenizer.decode(list(sample.prompt_ids)) in test_topics[sample.topic]
        assert 8 <= sample.output_tokens <= 64
    assert len({s.output_tokens for s in samples}) > 1  # lengths come from the text, not one constant
    fixed = language.test_prompts(tokenizer, 3, prompt_tokens=20)
    assert [len(s.prompt_ids) for s in fixed] == [20, 20, 20]
    with pytest.raises(ValueError, match="must be a length >= 1 or a range"):
        language.test_prompts(tokenizer, 3, prompt_tokens=(9, 4))

    class Spec:  # the two fields a generation trace's spec gives a prompt source
        prompt_tokens, output_tokens = (10, 12), (4, 6)

    source = language.trace_prompts(tokenizer)
    drawn = source(np.random.default_rng(0), 5, Spec())
    assert drawn == source(np.random.default_rng(0), 5, Spec()) and len(drawn) == 5
    assert all(10 <= len(ids) <= 12 and 4 <= out <= 6 and isinstance(ids, list) for ids, out in drawn)
