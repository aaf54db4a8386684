"""Language-model quality: perplexity is exp(mean NLL) by hand, with an interval that holds it; greedy
agreement of a model with itself is 1, with a perturbed copy below 1."""
import copy

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from optlab.data import text_corpus
from optlab.instruments import perplexity
from optlab.models import language


def tiny_llama(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=256)).eval()


def _windows(n=12, length=20, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 96, size=length - (i % 3)) for i in range(n)]


def test_perplexity_is_exp_of_the_mean_nll_by_hand():
    model, windows = tiny_llama(), _windows()
    result = perplexity.perplexity_of(model, windows, n_boot=300)
    nll, tokens = 0.0, 0
    with torch.inference_mode():
        for window in windows:
            ids = torch.from_numpy(window)[None]
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            nll -= logp[torch.arange(len(window) - 1), ids[0, 1:]].sum().item()
            tokens += len(window) - 1
    assert result.perplexity == pytest.approx(np.exp(nll / tokens), rel=1e-5)
    assert result.tokens == tokens and result.windows == len(windows)
    assert result.ci_low < result.perplexity < result.ci_high
    assert 50 < result.perplexity < 200  # a random model over 96 tokens is near uniform
    assert set(result.row()) == {"perplexity", "perplexity_ci_low", "perplexity_ci_high", "perplexity_tokens"}


def test_few_windows_give_no_interval_and_none_is_refused():
    result = perplexity.perplexity_of(tiny_llama(), _windows(n=3))
    assert result.ci_low is None and result.ci_high is None and result.perplexity > 1
    with pytest.raises(ValueError, match="no windows to score"):
        perplexity.perplexity_of(tiny_llama(), [])


def test_topic_perplexity_reads_the_test_topics():
    tokenizer = language.tokenizer_from_json(language.train_tokenizer(text_corpus.load().text("train"), 400))
    model = language.build(language.LMSpec("tiny", 1, 32, 4, 2, 64, 256), tokenizer)
    result = perplexity.topic_perplexity(model, tokenizer, limit=10, n_boot=100)
    assert result.windows == 10 and result.split == "test" and 0 < result.tokens <= 10 * (language.EVAL_LENGTH - 1)
    assert 100 < result.perplexity < 1000  # an untrained model: about the vocabulary's size


def test_agreement_with_itself_is_one_and_a_perturbed_copy_is_lower():
    model = tiny_llama()
    prompts = [list(np.random.default_rng(i).integers(0, 96, size=5 + i)) for i in range(10)]
    same = perplexity.greedy_agreement(model, model, prompts, max_new_tokens=12)
    assert same.agreement == 1.0 and same.prefix == 1.0 and same.identical_rate == 1.0
    assert same.tokens == 120 and same.prompts == 10
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.2 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    worse = perplexity.greedy_agreement(other, model, prompts, max_new_tokens=12, n_boot=200)
    assert worse.agreement < 1.0 and worse.identical_rate < 1.0 and worse.prefix < 1.0
    assert worse.ci_low <= worse.agreement <= worse.ci_high


def test_greedy_continuations_follow_the_full_forward_argmax():
    model, prompt = tiny_llama(), [3, 14, 15, 9, 2]
    (cached,) = perplexity.greedy_continuations(model, [prompt], 6)
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(6):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert cached == ids[len(prompt):]


def test_agreement_of_decoded_outputs_counts_missing_tokens_as_mismatches():
    result = perplexity.agreement_of([[1, 2, 3, 4], [5, 6], [7, 0, 9]], [[1, 2, 3, 4], [5, 6, 7, 8], [7, 8, 9]])
    assert result.agreement == pytest.approx(8 / 11) and result.identical_rate == pytest.approx(1 / 3)
    assert result.prefix == pytest.approx((1 + 0.5 + 1 / 3) / 3) and result.ci_low is None
    with pytest.raises(ValueError, match="one non-empty reference output per candidate output"):
        perplexity.agreement_of([[1]], [[1], [2]])
    with pytest.raises(ValueError, match="give the prompts"):
        perplexity.greedy_agreement(tiny_llama(), [[1, 2]])


def test_quality_row_puts_perplexity_in_the_quality_columns_with_a_paired_drop():
    model, windows = tiny_llama(), _windows(n=10)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    prompts = [[1, 2, 3], [4, 5, 6, 7]]
    same = perplexity.quality_row(model, model, windows, prompts, max_new_tokens=4, n_boot=100)
    assert same["metric"] == "perplexity" and same["quality"] == same["perplexity"]
    assert same["quality_drop"] == 0 and same["quality_drop_ci_low"] == same["quality_drop_ci_high"] == 0
    assert same["greedy_agreement"] == 1.0
    row = perplexity.quality_row(other, model, windows, n_boot=100)
    base = perplexity.perplexity_of(model, windows).perplexity
    assert row["quality_drop"] == pytest.approx(row["perplexity"] - base)
    assert row["quality_drop_ci_low"] <= row["quality_drop"] <= row["quality_drop_ci_high"]
    assert "greedy_agreement" not in row
