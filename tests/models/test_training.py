"""optlab.models.training: the shared training loop (determinism, divergence, stopping rules)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optlab.data.datasets import Split
from optlab.models.training import TrainingDiverged, TrainLog, to_tensors, train


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, pixels):
        return self.fc(pixels.flatten(1))


def _small(digits_data, n=1024) -> Split:
    return digits_data.train.take(slice(0, n))


def test_to_tensors_keeps_dtypes(digits_data, bids_data):
    t = to_tensors(next(bids_data.test.batches(4)))
    assert t["categorical"].dtype == torch.int64 and t["numeric"].dtype == torch.float32
    assert to_tensors(next(digits_data.test.batches(3)))["pixels"].shape == (3, 1, 8, 8)


def test_train_learns_and_logs(digits_data):
    torch.manual_seed(0)
    model = Linear()
    log = train(model, _small(digits_data), epochs=3, lr=1e-2, batch_size=64)
    assert isinstance(log, TrainLog) and log.epochs == 3 and log.steps == 3 * 16
    assert log.epoch_losses[-1] < log.epoch_losses[0] and log.stopped_by == "epochs"
    assert not model.training
    with torch.inference_mode():
        acc = (model(**to_tensors(digits_data.test.inputs)).argmax(1).numpy() == digits_data.test.labels).mean()
    assert acc > 0.6


def test_same_seed_same_weights_other_seed_differs(digits_data):
    def run(seed):
        torch.manual_seed(123)
        model = Linear()
        train(model, _small(digits_data, 512), epochs=2, lr=1e-2, batch_size=64, seed=seed)
        return model.fc.weight.detach().clone()

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_accepts_dataset_and_binary_logits(bids_data):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 1)

        def forward(self, categorical, numeric):
            return self.fc(numeric).squeeze(-1)

    log = train(Tiny(), bids_data.train.take(slice(0, 2000)), epochs=1, lr=1e-2, batch_size=500)
    assert np.isfinite(log.final_loss)


def test_nan_loss_raises_training_diverged(digits_data):
    def nan_loss(model, inputs, labels):
        return model(**inputs).sum() * float("nan")

    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train(Linear(), _small(digits_data), epochs=1, lr=1e-3, batch_size=64, loss_fn=nan_loss)
    assert issubclass(TrainingDiverged, RuntimeError)


def test_custom_loss_fn_is_used(digits_data):
    calls = []

    def loss_fn(model, inputs, labels):
        calls.append(len(labels))
        return nn.functional.cross_entropy(model(**inputs), labels)

    train(Linear(), _small(digits_data, 256), epochs=1, lr=1e-3, batch_size=64, loss_fn=loss_fn)
    assert calls == [64, 64, 64, 64]


def test_stopping_rules_and_bad_arguments(digits_data):
    log = train(Linear(), _small(digits_data), epochs=5, lr=1e-3, batch_size=64, max_seconds=0)
    assert log.stopped_by == "max_seconds" and log.steps == 1
    log = train(Linear(), _small(digits_data), epochs=5, lr=1e-3, batch_size=64, on_epoch=lambda e, lg: e == 1)
    assert log.stopped_by == "on_epoch" and log.epochs == 2
    with pytest.raises(ValueError, match="epochs"):
        train(Linear(), _small(digits_data), epochs=0, lr=1e-3, batch_size=64)
    with pytest.raises(TypeError, match="Split or Dataset"):
        train(Linear(), [1, 2, 3], epochs=1, lr=1e-3, batch_size=64)


def test_threads_restored(digits_data):
    before = torch.get_num_threads()
    train(Linear(), _small(digits_data, 128), epochs=1, lr=1e-3, batch_size=64, threads=1)
    assert torch.get_num_threads() == before


def test_seeded_training_and_model_building_leave_the_callers_rng_alone(digits_data):
    from optlab.models import zoo

    model = Linear()  # building it draws from the RNG; training it must not
    state = torch.random.get_rng_state()
    train(model, _small(digits_data, 128), epochs=1, lr=1e-3, batch_size=64, seed=123)
    zoo.build("digits", "student", data=digits_data, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
