"""Real torchrun processes (gloo on CPU) and preemption by signal, for cluster=local and cluster=torchrun."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_metrics, without_measurements
from research_optim import protocols

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TINY = ["train.steps=40", "train.eval_every=20", "train.log_every=10", "train.checkpoint_every=20",
        "train.progress=false", "model.dropout=0"]


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research_optim", *args], capture_output=True, text=True,
                          timeout=240, **kw)


def metrics_of(root: Path) -> list[dict]:
    run = next(root.glob("default/*/metrics.jsonl")).parent
    return without_measurements(read_metrics(run))


def summary_of(root: Path) -> dict:
    return json.loads(next(root.glob("default/*/summary.json")).read_text())


@pytest.mark.parametrize("micro", [[], ["train.micro_batch_size=4"]], ids=["whole", "2-micro-batches"])
def test_torchrun_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, micro):
    out = cli("cluster=torchrun", "cluster.nproc_per_node=2", "train.batch_size=16", f"run.root={tmp_path / 'ddp'}",
              *TINY, *micro)
    assert out.returncode == 0, out.stderr[-3000:]
    one = cli("train.batch_size=16", f"run.root={tmp_path / 'one'}", *TINY)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = metrics_of(tmp_path / "ddp"), metrics_of(tmp_path / "one")
    assert [(r["step"], r["split"], r["examples"]) for r in a] == [(r["step"], r["split"], r["examples"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4), (ra, rb)
    assert summary_of(tmp_path / "ddp")["final"]["replicas_identical"] is True
    ddp_run, one_run = (next((tmp_path / d).glob("default/*/")).name for d in ("ddp", "one"))
    assert ddp_run == one_run  # the same optimisation problem, the same run id


def test_torchrun_salsa_replicas_stay_identical(tmp_path):
    out = cli("cluster=torchrun", "optimizer=salsa", "model.dropout=0.2", f"run.root={tmp_path}", *TINY[:-1])
    assert out.returncode == 0, out.stderr[-3000:]
    final = summary_of(tmp_path)["final"]
    assert final["replicas_identical"] is True


def test_sigterm_in_process_checkpoints_and_resume_matches(tiny_run, tmp_path, monkeypatch):
    straight = tiny_run("model.dropout=0.2", root=tmp_path / "a")
    real, calls = protocols.optimizer_step, {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 27:  # mid logging window: the checkpoint must carry the partial window
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(protocols, "optimizer_step", step_then_signal)
    stopped = tiny_run("model.dropout=0.2", root=tmp_path / "b")
    assert stopped["status"] == "preempted" and stopped["step"] == 27
    monkeypatch.setattr(protocols, "optimizer_step", real)
    resumed = tiny_run("model.dropout=0.2", root=tmp_path / "b")
    assert resumed["status"] == "completed"
    assert without_measurements(read_metrics(resumed["run_dir"])) == without_measurements(
        read_metrics(straight["run_dir"]))


def test_sigterm_to_torchrun_launch_checkpoints_and_resumes_bit_for_bit(tmp_path):
    """4 ranks: with 3 or more, the order in which the ranks' gradients are added changes the rounding, so the
    resumed processes must all-reduce exactly like the uninterrupted ones (Trainer.prime_gradient_buckets)."""
    args = ["cluster=torchrun", "cluster.nproc_per_node=4", "train.steps=600", "train.eval_every=0",
            "train.checkpoint_every=0", "train.log_every=20", "train.progress=false", "model.dropout=0",
            f"run.root={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "research_optim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list(tmp_path.glob("default/*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-3000:]
    assert "run preempted at step" in output
    # said once, by rank 0: no torchrun traceback, no warning repeated per rank
    assert "Traceback" not in output and "SignalException" not in output, output[-3000:]
    assert output.count("received SIGTERM") == 1 and output.count("checkpoint written") == 2, output[-3000:]
    saved = summary_of(tmp_path)
    assert saved["status"] == "preempted"
    stopped_at = saved["final"]["step"]
    assert 0 < stopped_at < 600
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed at step {stopped_at}" in again.stderr + again.stdout
    assert summary_of(tmp_path)["status"] == "completed"
    straight = cli(*args[:-1], f"run.root={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert metrics_of(tmp_path) == metrics_of(tmp_path / "straight")


def test_torchrun_compiled_lion_keeps_replicas_identical(tmp_path):
    """The compiled fast path under DDP: every rank compiles and steps, and the replicas stay bit-identical."""
    env = {**os.environ, "RESEARCH_OPTIM_COMPILE": "1"}
    out = cli("cluster=torchrun", "optimizer=lion", "optimizer.implementation=compiled", "optimizer.lr=1e-3",
              f"run.root={tmp_path}", *TINY, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    final = summary_of(tmp_path)["final"]
    assert final["replicas_identical"] is True
    train = [r for r in metrics_of(tmp_path) if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]


def _replica_worker(rank: int) -> dict[str, list[str]]:
    """Each rank holds the same tensors, then rank 1 changes one of them in a way a sum of values could miss."""
    import torch

    from research_optim.distributed import differing_replicas

    torch.manual_seed(0)
    base = {"w": torch.randn(300, 200), "b": torch.randn(200), "h": torch.randn(64).bfloat16()}
    found = {"none": differing_replicas(list(base.items()))}
    for case in ("one ulp", "swap", "signed zero"):
        tensors = {name: t.clone() for name, t in base.items()}
        w, b, h = tensors["w"], tensors["b"], tensors["h"]
        if case == "signed zero":
            h[5] = 0.0 if rank == 0 else -0.0
        elif rank == 1 and case == "one ulp":
            w[7, 3] = torch.nextafter(w[7, 3], torch.tensor(math.inf))
        elif rank == 1:
            b[0], b[1] = b[1].clone(), b[0].clone()
        found[case] = differing_replicas(list(tensors.items()))
    return found


@pytest.mark.slow
def test_a_second_signal_during_the_first_ones_log_line_is_neither_logged_nor_counted():
    """Real signals: the first SIGUSR2's log line sends another (as SLURM's own signal and the torchrun agent's
    forwarded one can arrive together); the handler runs again inside the first, and the run logs one line."""
    from research_optim.preemption import StopFlag

    class SignalAgain(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())
            if len(self.messages) == 1:
                os.kill(os.getpid(), signal.SIGUSR2)

    logger = logging.getLogger("research_optim.preemption")
    again, level = SignalAgain(), logger.level
    logger.addHandler(again)
    logger.setLevel(logging.WARNING)
    try:
        with StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.1)  # both handlers have run
    finally:
        logger.removeHandler(again)
        logger.setLevel(level)
    assert stop.signum == signal.SIGUSR2
    assert again.messages == ["received SIGUSR2: checkpointing at the next step boundary"]


def test_the_replica_check_finds_a_tensor_that_differs_by_one_bit():
    from tests.conftest import on_gloo_ranks

    results = on_gloo_ranks(_replica_worker)
    expected = {"none": [], "one ulp": ["w"], "swap": ["b"], "signed zero": ["h"]}
    assert results[0] == results[1] == expected


def test_bit_checksums_do_not_depend_on_the_chunk_size():
    import torch

    from research_optim.distributed import bit_checksums

    tensors = [torch.randn(1001, dtype=torch.float64), torch.randn(33).half(), torch.zeros(0)]
    assert torch.equal(bit_checksums(tensors, chunk=7), bit_checksums(tensors))
