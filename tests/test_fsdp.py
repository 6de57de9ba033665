"""FSDP2 (train.parallel=fsdp) on 2 CPU ranks with gloo: every optimizer steps sharded parameters as DDP steps whole
ones, and a sharded run resumes bit for bit from torch.distributed.checkpoint files, damaged ones included."""
from __future__ import annotations

import json
import os
import socket
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from research_optim import distributed
from tests.conftest import TINY, compose_config, free_port, read_metrics, spawn_ranks, without_measurements

STEPS = 50

# (id, optimizer overrides): every optimizer of the library, the cautious φ and each implementation path
CASES = [
    ("adamw", ["optimizer=adamw"]),
    ("c_adamw-reference", ["optimizer=c_adamw", "optimizer.implementation=reference"]),
    ("c_adamw-foreach", ["optimizer=c_adamw", "optimizer.implementation=foreach"]),
    ("c_adamw-2-micro-batches", ["optimizer=c_adamw", "train.micro_batch_size=4"]),
    ("c_adamw-clipped", ["optimizer=c_adamw", "train.grad_clip=0.05"]),  # the clipping norm over shards
    *[(f"cautious-{phi}", ["optimizer=cautious", f"optimizer.phi={phi}", "optimizer.cautious_factor=0.5"])
      for phi in ("indicator_ratio", "indicator", "soft", "signxor")],
    ("lion", ["optimizer=lion"]),
    ("c_lion", ["optimizer=c_lion"]),
    ("lib_sgd", ["optimizer=lib_sgd"]),
    ("c_muon", ["optimizer=c_muon"]),
    ("adafactor", ["optimizer=adafactor"]),
    ("c_adafactor", ["optimizer=c_adafactor"]),
    ("sf_adamw", ["optimizer=sf_adamw"]),
    ("sf_sgd", ["optimizer=sf_sgd"]),
    ("sf_radam", ["optimizer=sf_radam"]),
    ("sf_adamw_closure", ["optimizer=sf_adamw_closure"]),
    ("sf_wrapper", ["optimizer=sf_wrapper"]),
    ("salsa", ["optimizer=salsa"]),
    ("salsa-reference", ["optimizer=salsa", "optimizer.implementation=reference", "optimizer.cautious=indicator_mean"]),
    ("salsa_muon", ["optimizer=salsa_muon"]),
    ("sls", ["optimizer=sls"]),
    *[(name, [f"optimizer={name}"]) for name in (  # the rest of conf/optimizer/, each at its defaults
        "sgd", "nadamw", "lib_adamw", "muon", "sf_muon", "c_sf_adamw", "sf_adamw_paper", "sf_sgd_closure",
        "sf_radam_closure", "sf_wrapper_reference", "salsa_sgd", "adam_sls")],
]


def test_the_cases_cover_every_optimizer_config():
    configs = {path.stem for path in (Path(__file__).parents[1] / "conf" / "optimizer").glob("*.yaml")}
    covered = {override.split("=", 1)[1] for _, overrides in CASES for override in overrides
               if override.startswith("optimizer=")}
    assert configs - covered == set()


def _model() -> nn.Module:
    torch.manual_seed(0)  # the same initial model in every run; 15 rows shard unevenly (8 + 7)
    return nn.Sequential(nn.Linear(6, 15), nn.Tanh(), nn.Linear(15, 12), nn.Tanh(), nn.Linear(12, 3))


def _train(overrides: list[str], parallel: str, rank: int) -> dict:
    """50 steps of the loop's own step (``protocols.optimizer_step``, clipping on) on rank-specific batches of 8,
    in micro-batches of ``train.micro_batch_size``: the gradient is synchronised with the last one."""
    from research_optim import fsdp, protocols
    from research_optim.batch_loss import BatchLoss, loss_and_correct
    from research_optim.build import build_optimizer
    from research_optim.optim.sharded import is_sharded, whole

    cfg = compose_config(overrides)
    model = _model()
    if parallel == "fsdp":
        fsdp.shard(model, torch.device("cpu"), dist.get_world_size())
        net, no_sync = model, partial(fsdp.no_gradient_sync, model)
    else:
        net = nn.parallel.DistributedDataParallel(model)
        no_sync = net.no_sync
    optimizer = build_optimizer(cfg.optimizer, model, cfg.train.weight_decay_norm_and_bias, 100)
    if protocols.has_modes(optimizer):
        optimizer.train()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    for _ in range(STEPS):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        batch_loss = BatchLoss(lambda a, b: loss_and_correct(net(a), b)[0], x, y, cfg.train.micro_batch_size, no_sync)
        protocols.optimizer_step(optimizer, batch_loss, params, cfg.train.grad_clip)
    out = {"train": [whole(p.detach()).clone() for p in params], "diagnostics": protocols.diagnostics(optimizer),
           "sharded": all(is_sharded(p) for p in params)}
    with protocols.evaluation_mode(optimizer):  # Schedule-Free: x, the evaluation point
        out["eval"] = [whole(p.detach()).clone() for p in params]
    return out


def _equivalence_worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {name: {parallel: _train(overrides, parallel, rank) for parallel in ("ddp", "fsdp")}
                   for name, overrides in CASES}
        if rank == 0:
            torch.save(results, out)
    finally:
        distributed.teardown()  # as a run leaves its group


def _relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).abs().max() / x.abs().max()).item() for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_optimizer_on_fsdp_equals_ddp(tmp_path):
    out = tmp_path / "results.pt"
    spawn_ranks(_equivalence_worker, lambda attempt: (free_port(), str(out)))
    results = torch.load(out)
    for name, _ in CASES:
        ddp, sharded = results[name]["ddp"], results[name]["fsdp"]
        assert sharded["sharded"] and not ddp["sharded"], name
        assert _relative_error(ddp["train"], sharded["train"]) < 1e-6, name
        assert _relative_error(ddp["eval"], sharded["eval"]) < 1e-6, name
        assert ddp["diagnostics"].keys() == sharded["diagnostics"].keys(), name
        for key, value in ddp["diagnostics"].items():  # masked fractions, step sizes: over whole tensors
            assert sharded["diagnostics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key)
        assert _relative_error(ddp["train"], list(_model().parameters())) > 1e-3, name  # the steps moved them


class Interrupted(Exception):
    pass


SHARDED_RUN = [*TINY, "train.checkpoint_every=10", "train.parallel=fsdp", "model.dropout=0.2", "optimizer=c_adamw",
               "train.nonfinite=skip"]  # skip: the finiteness checks of every step, on shards


def _wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)


def _trainer_worker(rank: int, ports: list[int], root: str) -> None:
    """Each rank: an uninterrupted run (a/); a run that dies after its checkpoint of step 30 (b/); then, with last.dcp
    damaged and a dead save's temp directory planted (rank 0), the same run again — from prev.dcp."""
    from research_optim import sharded_checkpoint
    from research_optim.train import Trainer, train

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    a, b = Path(root) / "a", Path(root) / "b"
    os.environ["MASTER_PORT"] = str(ports[0])
    train(compose_config([*SHARDED_RUN, f"run.root={a}"]))

    original = Trainer.save_checkpoint

    def save_then_die(self, window):
        original(self, window)
        if self.state.step == 30:
            raise Interrupted

    Trainer.save_checkpoint = save_then_die
    os.environ["MASTER_PORT"] = str(ports[1])
    try:
        train(compose_config([*SHARDED_RUN, f"run.root={b}"]))
    except Interrupted:
        pass
    Trainer.save_checkpoint = original

    folder = next(b.glob("default/*/checkpoints"))
    if rank == 0:
        shard = folder / sharded_checkpoint.NAMES.last / "__1_0.distcp"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        (folder / f"{sharded_checkpoint.NAMES.temp_prefix}{socket.gethostname()}.{2**22 + 1}").mkdir()
        (folder / "damaged").touch()
    _wait_for(folder / "damaged")
    os.environ["MASTER_PORT"] = str(ports[2])
    train(compose_config([*SHARDED_RUN, f"run.root={b}"]))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sharded_run_resumes_bit_exact_and_falls_back_from_a_damaged_checkpoint(tmp_path):
    from research_optim import checkpoint, sharded_checkpoint

    _, root = spawn_ranks(_trainer_worker, lambda attempt: ([free_port() for _ in range(3)],
                                                             str(tmp_path / f"attempt{attempt}")))
    straight, resumed = (next(Path(root, r).glob("default/*/")) for r in ("a", "b"))
    assert without_measurements(read_metrics(resumed)) == without_measurements(read_metrics(straight))
    log = (resumed / "run.log").read_text()
    folder = resumed / "checkpoints"
    assert f"checkpoint {folder / 'last.dcp'} cannot be read" in log and "resuming from the previous checkpoint" in log
    assert (folder / "last.dcp.damaged").is_dir()
    assert not list(folder.glob(".last.dcp.tmp.*"))  # the dead save's temp directory was removed
    assert sharded_checkpoint.peek(folder / "prev.dcp")["state"]["step"] == 30
    last = sharded_checkpoint.peek(folder / "last.dcp")
    assert last["topology"] == {"world_size": 2, "device": "cpu", "micro_batches": 1, "parallel": "fsdp"}
    assert {p.name for p in (folder / "last.dcp").glob("*.distcp")} == {"__0_0.distcp", "__1_0.distcp"}
    assert not (folder / checkpoint.LAST).exists()



# the same run (c_adamw, digits) under DDP and FSDP, in bf16 autocast and in float32
PRECISIONS = {
    "ddp-bf16": ["train.parallel=ddp", "train.precision=bf16"],
    "fsdp-bf16": ["train.parallel=fsdp", "train.precision=bf16"],
    "fsdp-fp32": ["train.parallel=fsdp"],
}


def _precision_worker(rank: int, ports: list[int], root: str) -> None:
    from research_optim.train import train

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    for port, (name, overrides) in zip(ports, PRECISIONS.items()):
        os.environ["MASTER_PORT"] = str(port)
        train(compose_config([*TINY, "optimizer=c_adamw", *overrides, f"run.root={Path(root, name)}"]))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fsdp_in_bf16_computes_what_ddp_computes(tmp_path):
    """bf16 autocast under FSDP: the all-gathered float32 shards are cast as DDP's replicas are, so the run's losses
    are DDP's (and not the float32 run's: autocast was on)."""
    _, root = spawn_ranks(_precision_worker, lambda attempt: ([free_port() for _ in PRECISIONS],
                                                              str(tmp_path / f"attempt{attempt}")))
    final = {name: json.loads(next(Path(root, name).glob("default/*/summary.json")).read_text())["final"]
             for name in PRECISIONS}
    for key in ("train_loss", "val_loss"):
        assert final["fsdp-bf16"][key] == pytest.approx(final["ddp-bf16"][key], rel=1e-5), key
        assert abs(final["fsdp-bf16"][key] - final["fsdp-fp32"][key]) > 1e-5, key


# torch's names for the threads of a gloo process group: its work loops, its TCP loop, the store's server (rank 0)
PROCESS_GROUP_THREADS = {"pt_gloo_runloop", "gloo_tcp_loop", "pt_tcpstore_uv"}


def _thread_names() -> set[str]:
    return {Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")}


def _threads_worker(rank: int, port: int, root: str) -> None:
    from research_optim.train import train

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # the run joins this group and destroys it
    dist.barrier()  # the work loops start with the first collective
    during = _thread_names()
    train(compose_config([*TINY, "train.steps=4", "optimizer=c_adamw", "train.parallel=fsdp", f"run.root={root}"]))
    Path(root, f"threads{rank}.json").write_text(json.dumps({"during": sorted(during),
                                                             "after": sorted(_thread_names())}))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_a_sharded_run_leaves_no_process_group_thread_behind(tmp_path):
    """DTensor's caches held the mesh, and so the gloo group with its threads, until the interpreter's shutdown,
    where a rank whose run had finished was aborted (SIGABRT, CI): the group ends with the run."""
    _, root = spawn_ranks(_threads_worker, lambda attempt: (free_port(), str(tmp_path / f"attempt{attempt}")))
    for rank in (0, 1):
        threads = json.loads(Path(root, f"threads{rank}.json").read_text())
        assert {"pt_gloo_runloop", "gloo_tcp_loop"} <= set(threads["during"]), threads  # the names are torch's
        assert PROCESS_GROUP_THREADS.isdisjoint(threads["after"]), threads


def test_a_compiled_model_under_fsdp_is_refused_at_the_door():
    """torch.compile stops at FSDP2's hooks (on 2 gloo ranks dynamo compiled no graph of the sharded model), so a run
    named compiled would run eagerly: refused before any work, on more than one process."""
    from research_optim.config_checks import ConfigError, validate

    torchrun = ["cluster=torchrun", "cluster.nproc_per_node=2", "train.batch_size=16"]
    with pytest.raises(ConfigError, match=r"train.compile_model=true with train.parallel=fsdp: .* set "
                                          r"train.compile_model=false or train.parallel=ddp"):
        validate(compose_config([*torchrun, "train.parallel=fsdp", "train.compile_model=true"]))
    validate(compose_config([*torchrun, "train.parallel=ddp", "train.compile_model=true"]))
    validate(compose_config(["train.parallel=fsdp", "train.compile_model=true"]))  # one process shards nothing

def test_train_parallel_is_checked_at_the_door():
    from research_optim.config_checks import ConfigError, validate

    with pytest.raises(ConfigError, match=r"train.parallel='zero': choose one of ddp, fsdp"):
        validate(compose_config(["train.parallel=zero"]))


def test_a_resume_under_the_other_parallel_choice_is_refused(tmp_path):
    from research_optim import checkpoint, sharded_checkpoint
    from research_optim.topology import TopologyMismatch, topology

    ddp, sharded = topology(2, "cpu", 1, "ddp"), topology(2, "cpu", 1, "fsdp")
    checkpoint.save({"topology": ddp}, tmp_path)
    with pytest.raises(TopologyMismatch, match=r"written by 2 processes on cpu; this launch has 2 processes on cpu "
                                               r"with FSDP.*train.parallel"):
        sharded_checkpoint.check_every_kind(tmp_path, sharded)
    checkpoint.discard(tmp_path)
    (tmp_path / sharded_checkpoint.NAMES.last).mkdir()
    torch.save({"topology": sharded}, tmp_path / sharded_checkpoint.NAMES.last / sharded_checkpoint.META)
    sharded_checkpoint.check_every_kind(tmp_path, sharded)
    with pytest.raises(TopologyMismatch, match="with FSDP; this launch has 2 processes on cpu. "):
        sharded_checkpoint.check_every_kind(tmp_path, ddp)
    assert topology(1, "cpu", 1, "fsdp") == topology(1, "cpu")  # one process shares nothing


@pytest.fixture(scope="module")
def one_rank_mesh():
    """A process group of this process alone and its 1-D mesh: DTensors without other processes."""
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    distributed.teardown()  # as a run leaves its group


def test_muon_and_adafactor_gather_a_sharded_matrix(one_rank_mesh):
    """Newton–Schulz on a sharded matrix (a DTensor) is the iteration on the whole matrix, handed back sharded as the
    input; Adafactor's whole row and column statistics give its step on the whole matrix (on 2 ranks: the
    equivalence test above)."""
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from research_optim.optim.adafactor import Adafactor
    from research_optim.optim.muon import orthogonalize

    u = torch.randn(6, 4)
    sharded = distribute_tensor(u, one_rank_mesh, [Shard(0)])
    o = orthogonalize(sharded)
    assert isinstance(o, DTensor) and o.placements == (Shard(0),)
    assert torch.equal(o.full_tensor(), orthogonalize(u))
    p, plain = nn.Parameter(distribute_tensor(u, one_rank_mesh, [Shard(0)])), nn.Parameter(u.clone())
    sharded_adafactor, plain_adafactor = Adafactor([p], beta1=0.9), Adafactor([plain], beta1=0.9)
    for _ in range(3):
        g = torch.randn(6, 4)
        p.grad, plain.grad = distribute_tensor(g, one_rank_mesh, [Shard(0)]), g
        sharded_adafactor.step()
        plain_adafactor.step()
    assert torch.equal(p.full_tensor(), plain.detach())


def test_a_compiled_step_on_sharded_parameters_runs_eagerly(one_rank_mesh, monkeypatch):
    """implementation=compiled with compilation on: sharded parameters take the eager path (nothing is compiled),
    which gives the eager step on whole tensors bit for bit."""
    from torch.distributed.tensor import Shard, distribute_tensor

    from research_optim.optim import compiled, implementation
    from research_optim.optim.lion import Lion

    def no_compiling(fn):
        raise AssertionError(f"{fn.__name__} was compiled for sharded parameters")

    monkeypatch.setattr(compiled, "_dynamo", no_compiling)
    monkeypatch.setattr(compiled, "_direct", {})  # no graph recorded by an earlier test: every call would compile
    implementation.set_compile_enabled(True)
    try:
        whole_p, whole_g = torch.randn(5, 3), torch.randn(5, 3)
        p = nn.Parameter(distribute_tensor(whole_p.clone(), one_rank_mesh, [Shard(0)]))
        p.grad = distribute_tensor(whole_g, one_rank_mesh, [Shard(0)])
        plain = nn.Parameter(whole_p.clone())
        plain.grad = whole_g
        Lion([p], implementation="compiled").step()
        Lion([plain], implementation="foreach").step()
        assert torch.equal(p.full_tensor(), plain.detach())
    finally:
        implementation.set_compile_enabled(None)
