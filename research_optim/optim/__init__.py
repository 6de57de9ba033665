"""The optimizer library: plain PyTorch, importable without Hydra or W&B.

Every optimizer is a ``torch.optim.Optimizer``. The training loop drives them through three protocols,
which an optimizer opts into by what it defines (see ``research_optim.protocols``):

* plain ``step()`` — the default;
* ``requires_closure = True`` — ``step(closure)`` evaluates the loss itself (line search);
* ``train()`` / ``eval()`` methods — the loop switches modes around evaluation and checkpointing (Schedule-Free).

An optimizer may also define ``diagnostics() -> dict[str, float]``; the loop calls it only when it logs, so it
is the one place where an optimizer may synchronise with the device.
"""
