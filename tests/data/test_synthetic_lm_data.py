"""The synthetic Markov language: its entropy rate and optimum loss, computed in closed form, match samples."""
from __future__ import annotations

import math

import pytest
import torch

from research_optim.data.synthetic_lm import MarkovLanguage, load_synthetic_lm


def _plugin_conditional_entropy(contexts: torch.Tensor, nexts: torch.Tensor, num_contexts: int, vocab: int) -> float:
    """Empirical H(next | context) in nats from counts."""
    counts = torch.zeros(num_contexts, vocab, dtype=torch.float64)
    counts.index_put_((contexts, nexts), torch.ones(len(nexts), dtype=torch.float64), accumulate=True)
    joint = counts / counts.sum()
    conditional = counts / counts.sum(1, keepdim=True).clamp(min=1)
    return float(-torch.special.xlogy(joint, conditional).sum())


def test_stationary_distribution_is_invariant_under_the_dense_transition_matrix():
    language = MarkovLanguage(vocab_size=4, order=2, alpha=0.5, seed=3)
    dense = torch.zeros(16, 16, dtype=torch.float64)
    for context in range(16):
        for token in range(4):
            dense[context, language.next_context[context, token]] += language.transition[context, token]
    torch.testing.assert_close(language.stationary @ dense, language.stationary, rtol=0, atol=1e-12)
    assert math.isclose(float(language.stationary.sum()), 1.0, abs_tol=1e-12)


def test_entropy_rate_matches_two_empirical_estimates():
    language = MarkovLanguage(vocab_size=6, order=1, alpha=0.5, seed=1)
    tokens = language.sample(4000, 101, torch.Generator().manual_seed(0))
    contexts, nexts = tokens[:, :-1].flatten(), tokens[:, 1:].flatten()
    # (a) Monte Carlo average of -log P(next | context) under the true chain
    monte_carlo = float(-language.transition[contexts, nexts].log().mean())
    # (b) plug-in conditional entropy from transition counts (knows nothing of the true chain)
    plugin = _plugin_conditional_entropy(contexts, nexts, 6, 6)
    assert 0.2 < language.entropy_rate < math.log(6)  # a non-trivial language
    assert monte_carlo == pytest.approx(language.entropy_rate, abs=0.01)
    assert plugin == pytest.approx(language.entropy_rate, abs=0.01)


def test_optimum_loss_accounts_for_the_missing_context_at_the_start():
    language = MarkovLanguage(vocab_size=5, order=2, alpha=0.3, seed=2)
    seq_len = 8
    tokens = language.sample(40000, seq_len + 1, torch.Generator().manual_seed(1))
    # Target x_1 is predicted from x_0 alone: H(X_1 | X_0), estimated from counts of the first two tokens.
    first = _plugin_conditional_entropy(tokens[:, 0], tokens[:, 1], 5, 5)
    expected = (first + (seq_len - 1) * language.entropy_rate) / seq_len
    assert language.optimum_loss(seq_len) == pytest.approx(expected, abs=0.005)
    assert language.optimum_loss(seq_len) > language.entropy_rate  # missing context only costs
    assert MarkovLanguage(5, 1, 0.3, 2).optimum_loss(seq_len) == pytest.approx(MarkovLanguage(5, 1, 0.3, 2).entropy_rate)


def test_sequences_start_and_stay_stationary():
    language = MarkovLanguage(vocab_size=4, order=2, alpha=0.5, seed=0)
    tokens = language.sample(50000, 6, torch.Generator().manual_seed(0))
    for position in (0, 4):  # the starting context and the last one
        contexts = tokens[:, position] * 4 + tokens[:, position + 1]
        frequencies = torch.bincount(contexts, minlength=16).double() / len(contexts)
        assert (frequencies - language.stationary).abs().sum() / 2 < 0.02  # total variation


def test_dataset_windows_spec_and_determinism():
    kwargs = dict(vocab_size=8, order=2, alpha=0.2, seq_len=12, num_train=64, num_val=16)
    data = load_synthetic_lm(seed=5, **kwargs)
    again = load_synthetic_lm(seed=5, **kwargs)
    other = load_synthetic_lm(seed=6, **kwargs)
    assert data.spec.task == "lm" and data.spec.input_shape == (12,) and data.spec.num_classes == 8
    assert data.train.inputs.shape == (64, 12) and data.val.inputs.shape == (16, 12)
    torch.testing.assert_close(data.train.inputs[:, 1:], data.train.targets[:, :-1])
    torch.testing.assert_close(data.train.inputs, again.train.inputs)
    torch.testing.assert_close(data.val.targets, again.val.targets)
    assert data.spec.optimum_loss == again.spec.optimum_loss != other.spec.optimum_loss
    assert not torch.equal(data.train.inputs, other.train.inputs)
    expected = MarkovLanguage(8, 2, 0.2, 5).optimum_loss(12)
    assert data.spec.optimum_loss == pytest.approx(expected)
    assert data.spec.extra["entropy_rate"] < data.spec.optimum_loss < math.log(8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocab_size": 1}, "data.vocab_size"),
        ({"order": 0}, "data.order"),
        ({"alpha": 0.0}, "data.alpha"),
        ({"seq_len": 1, "order": 2}, "data.seq_len=1 must be ≥ data.order=2"),
        ({"num_val": 0}, "data.num_val"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_synthetic_lm(**{"num_train": 8, "num_val": 4, **kwargs})
