"""Fixtures shared by the optimizer tests."""
from __future__ import annotations

import pytest
import torch

from research_optim.optim.implementation import set_compile_enabled


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for the test: the upstream SaLSA code allocates its statistics with
    ``torch.zeros(shape)`` (default dtype), so float64 everywhere makes the comparisons exact."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def compilation_on():
    """The compiled paths even where the process-wide switch is off (tests/conftest.py turns it off)."""
    set_compile_enabled(True)
    yield
    set_compile_enabled(None)
