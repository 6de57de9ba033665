"""Workloads that measure optimisation: endless fresh samples from a known process, and their known optimum.

The streamed Markov language and the teacher–student task never repeat a training example, resume from the step
alone, split every global batch over ranks like in-memory data, and declare an optimum that an independent
estimate agrees with.
"""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import read_metrics
from research_optim.data.synthetic_lm_stream import load_synthetic_lm_stream
from research_optim.data.teacher_student import load_teacher_student

SMALL_TEACHER = dict(num_val=256, num_test=256, optimum_samples=1 << 16)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("load", [lambda: load_synthetic_lm_stream(num_val=64, num_test=64),
                                  lambda: load_teacher_student(**SMALL_TEACHER)], ids=["lm_stream", "teacher"])
def test_stream_is_fresh_resumable_and_split_over_ranks(load):
    data = load()
    batches = _take(data.train.train_batches(16, seed=3), 6)
    # fresh: no two steps (and no two run seeds) draw the same examples
    assert all(not torch.equal(batches[i][0], batches[j][0]) for i in range(6) for j in range(i))
    assert not torch.equal(next(data.train.train_batches(16, seed=4))[0], batches[0][0])
    # resumable from the step alone, and the same after loading the data again
    resumed = _take(load().train.train_batches(16, seed=3, start_step=4), 2)
    for (x, y), (rx, ry) in zip(batches[4:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    # two ranks hold the two halves of the one global batch
    halves = [next(data.train.train_batches(16, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), batches[0][0])
    assert torch.equal(torch.cat([h[1] for h in halves]), batches[0][1])
    # validation and test are fixed and distinct; the loop's "train" evaluation needs a limit on a stream
    assert torch.equal(data.val.inputs, load().val.inputs) and not torch.equal(data.val.inputs, data.test.inputs)
    assert sum(len(y) for _, y in data.train.eval_batches(10, limit=25)) == 25
    with pytest.raises(ValueError, match="endless"):
        next(data.train.eval_batches(10))


def test_streamed_language_samples_the_chain_at_its_entropy_rate():
    data = load_synthetic_lm_stream(vocab_size=8, order=1, alpha=0.3, seq_len=16, num_val=8, num_test=8, seed=1)
    from research_optim.data.synthetic_lm import MarkovLanguage

    language = MarkovLanguage(8, 1, 0.3, 1)
    x, y = next(data.train.train_batches(4096, seed=0))
    # the true predictor's loss on a training batch estimates the population loss: the declared optimum
    loss = float(-language.transition[x.flatten(), y.flatten()].log().mean())
    assert data.spec.optimum_loss == pytest.approx(language.optimum_loss(16)) == pytest.approx(language.entropy_rate)
    assert loss == pytest.approx(data.spec.optimum_loss, abs=0.01)


def test_teacher_bayes_loss_agrees_with_the_teachers_own_cross_entropy():
    """The Bayes loss is the teacher's expected entropy (estimated with a stated standard error); the cross-entropy
    of the teacher's probabilities on fresh labelled samples is an independent estimate of the same number."""
    from research_optim.data.teacher_student import Teacher

    data = load_teacher_student(**SMALL_TEACHER)
    teacher = Teacher(32, 10, 64, 4.0, 0)
    x, y = next(data.train.train_batches(1 << 16, seed=0))
    nll = -teacher.probs(x).gather(1, y[:, None]).squeeze(1).log()
    both = math.hypot(float(nll.std()) / math.sqrt(len(nll)), data.spec.extra["optimum_stderr"])
    assert 0 < data.spec.extra["optimum_stderr"] < 0.01
    assert 0.5 < data.spec.optimum_loss < math.log(10)  # a task with something to learn and noise left over
    assert abs(float(nll.mean()) - data.spec.optimum_loss) < 4 * both
    assert load_teacher_student(**SMALL_TEACHER, seed=1).spec.optimum_loss != data.spec.optimum_loss


def test_a_run_on_the_teacher_reports_its_gap_and_a_separate_test_split(tiny_run):
    summary = tiny_run("data=teacher_student", "data.num_val=128", "data.num_test=128", "data.optimum_samples=4096")
    assert summary["status"] == "completed"
    records = read_metrics(summary["run_dir"])
    test = [r for r in records if r["split"] == "test"]
    val = [r for r in records if r["split"] == "val"]
    assert len(test) == 1 and test[0]["step"] == val[-1]["step"] == 40  # once, at the end
    assert summary["test_loss"] == test[0]["loss"] != summary["val_loss"]
    assert "gap_to_optimum" in test[0] and "val_gap_to_optimum" in summary
