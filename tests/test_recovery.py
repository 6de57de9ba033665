"""Recovery from real faults: kill -9 mid-run and mid-save, a truncated checkpoint, a fresh start over an old run.

The killed runs are real subprocesses; the truncated checkpoints are real files cut short on disk.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_metrics, without_measurements
from research_optim import checkpoint
from research_optim.jobs import run_progress
from research_optim.run_dir import RunLock
from research_optim.train import Trainer

pytestmark = pytest.mark.timeout(300)

LONG = ["train.steps=1500", "train.batch_size=16", "train.checkpoint_every=250", "train.log_every=50",
        "train.eval_every=500", "train.eval_batch_size=128", "train.progress=false"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The metrics of the LONG run, uninterrupted."""
    from tests.conftest import compose_config
    from research_optim.app import run

    summary = run(compose_config([*LONG, f"run.root={tmp_path_factory.mktemp('uninterrupted')}"]))
    return without_measurements(read_metrics(summary["run_dir"]))


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "research_optim", *args], capture_output=True, text=True,
                          timeout=240, **kw)


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def the_run_dir(root: Path) -> Path:
    wait_for(lambda: any(root.glob("default/*/")))
    return next(root.glob("default/*/"))


class Interrupted(Exception):
    pass


def interrupted_at(tiny_run, monkeypatch, step: int, *overrides: str, root: Path) -> Path:
    """Run in-process until the checkpoint of ``step`` is written, then stop as a crash would (no summary)."""
    original = Trainer.save_checkpoint

    def save_then_die(self, window):
        original(self, window)
        if self.state.step == step:
            raise Interrupted

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        tiny_run(*overrides, root=root)
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    return next(root.glob("default/*/"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.slow
def test_kill_9_mid_run_then_the_same_command_resumes_bit_exact(uninterrupted, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "research_optim", *LONG, f"run.root={tmp_path / 'b'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = the_run_dir(tmp_path / "b")
    wait_for(lambda: (run_dir / "checkpoints" / "last.pt").exists() and
             any(r["step"] > 250 for r in read_metrics(run_dir)))
    proc.kill()  # SIGKILL: no handler, no checkpoint, no summary
    proc.wait()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "running"
    assert run_progress(run_dir)[0] == "interrupted"  # a "running" summary whose lock is stale
    assert RunLock(run_dir).holder() is None
    again = cli(*LONG, f"run.root={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at step" in again.stderr
    assert without_measurements(read_metrics(run_dir)) == uninterrupted


SAVE_THEN_DIE = """
import io, os, signal, sys
import torch
from research_optim import checkpoint

real_save, saves = torch.save, []

def save_half_then_die(obj, f, *args, **kwargs):
    saves.append(1)
    if len(saves) < 2:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # the second save: half written, then kill -9
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint.torch.save = save_half_then_die
from research_optim.app import main
sys.argv = ["research_optim", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_kill_9_mid_save_leaves_last_checkpoint_intact_and_its_temp_file_is_removed(uninterrupted,
                                                                                    tmp_path):
    killed = subprocess.run([sys.executable, "-c", SAVE_THEN_DIE, *LONG, f"run.root={tmp_path / 'b'}"],
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = next((tmp_path / "b").glob("default/*/"))
    folder = run_dir / "checkpoints"
    (left,) = folder.glob(".last.pt.tmp.*")
    assert left.name == f".last.pt.tmp.{socket.gethostname()}.{killed_pid(left)}" and left.stat().st_size > 0
    assert checkpoint.load(folder / "last.pt")["state"]["step"] == 250  # the first save, untouched
    live = subprocess.Popen(["sleep", "300"])
    try:  # a temp file of a process that is alive, and one from another host: never ours to delete
        (folder / f".last.pt.tmp.{socket.gethostname()}.{live.pid}").write_bytes(b"being written")
        (folder / ".last.pt.tmp.otherhost.1").write_bytes(b"elsewhere")
        again = cli(*LONG, f"run.root={tmp_path / 'b'}")
        assert again.returncode == 0, again.stderr[-3000:]
        assert sorted(p.name for p in folder.glob(".last.pt.tmp.*")) == sorted(
            [f".last.pt.tmp.{socket.gethostname()}.{live.pid}", ".last.pt.tmp.otherhost.1"])
    finally:
        live.kill()
        live.wait()
    assert "resumed at step 250" in again.stderr and "otherhost" in again.stderr
    assert without_measurements(read_metrics(run_dir)) == uninterrupted


def killed_pid(temp_file: Path) -> str:
    return temp_file.name.rsplit(".", 1)[1]


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(tiny_run, tmp_path, monkeypatch):
    straight = tiny_run("train.checkpoint_every=10", root=tmp_path / "a")
    run_dir = interrupted_at(tiny_run, monkeypatch, 30, "train.checkpoint_every=10", root=tmp_path / "b")
    folder = run_dir / "checkpoints"
    assert checkpoint.load(folder / "prev.pt")["state"]["step"] == 20
    truncate(folder / "last.pt")
    resumed = tiny_run("train.checkpoint_every=10", root=tmp_path / "b")
    assert resumed["status"] == "completed"
    log = (run_dir / "run.log").read_text()
    assert f"checkpoint {folder / 'last.pt'} cannot be read" in log and "resuming from the previous checkpoint" in log
    assert (folder / "last.pt.damaged").exists()  # out of the rotation: the next save kept prev.pt good
    assert checkpoint.load(folder / "prev.pt")["state"]["step"] == 30
    assert without_measurements(read_metrics(run_dir)) == without_measurements(read_metrics(straight["run_dir"]))


def test_an_unreadable_only_checkpoint_fails_the_run_with_the_choices(tiny_run, tiny_trainer, tmp_path, monkeypatch):
    run_dir = interrupted_at(tiny_run, monkeypatch, 20, root=tmp_path)
    truncate(run_dir / "checkpoints" / "last.pt")
    with pytest.raises(checkpoint.CorruptCheckpoint) as err:  # the executing side (here, without the door)
        tiny_trainer(root=tmp_path)
    message = str(err.value)
    assert str(run_dir / "checkpoints" / "last.pt") in message and "run.resume=false" in message
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == message


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_refused_at_the_door_in_one_message(tiny_run, tmp_path, monkeypatch):
    run_dir = interrupted_at(tiny_run, monkeypatch, 20, "train.progress=false", root=tmp_path)
    truncate(run_dir / "checkpoints" / "last.pt")
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    args = ["train.steps=40", "train.batch_size=16", "train.eval_every=20", "train.log_every=10",
            "train.checkpoint_every=20", "train.progress=false", "train.eval_batch_size=128", f"run.root={tmp_path}"]
    out = cli(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
    assert f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} cannot be read" in out.stderr
    assert "run.resume=false" in out.stderr
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # nothing written
    fresh = cli(*args, "run.resume=false")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    steps = [(r["step"], r["split"]) for r in read_metrics(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == (40, "val")


def test_a_fresh_start_replaces_the_old_run_metrics_and_checkpoints(tiny_run, tmp_path, monkeypatch):
    every10 = "train.checkpoint_every=10"
    straight = tiny_run(every10, root=tmp_path / "a")
    run_dir = interrupted_at(tiny_run, monkeypatch, 20, every10, root=tmp_path / "b")
    assert [r["step"] for r in read_metrics(run_dir) if r["split"] == "train"] == [10, 20]
    again = tiny_run(every10, "run.resume=false", root=tmp_path / "b")  # same id: run.* is not part of it
    assert again["status"] == "completed" and again["run_dir"] == str(run_dir)
    assert without_measurements(read_metrics(run_dir)) == without_measurements(read_metrics(straight["run_dir"]))
    # a fresh start that dies before its first checkpoint leaves nothing of the old run to resume from
    other = interrupted_at(tiny_run, monkeypatch, 20, every10, root=tmp_path / "c")
    interrupted_at(tiny_run, monkeypatch, 10, every10, "run.resume=false", root=tmp_path / "c")
    assert checkpoint.load(other / "checkpoints" / "last.pt")["state"]["step"] == 10
    assert not (other / "checkpoints" / "prev.pt").exists()
    assert [r["step"] for r in read_metrics(other)] == [10]
