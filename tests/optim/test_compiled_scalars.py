"""One-element inputs of the compiled steps' C++ kernels are ``__restrict__`` (``optim.compiled.restrict_scalars``),
so that the compiler moves their loads and the arithmetic on them out of the loop over the elements — unless the
graph writes one of them, where that promise would be false.

The speed this buys is measured by ``benchmarks.step_time``, not here; the compiled-vs-reference tests of every rule
(``test_compiled_per_tensor.py``) run with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from research_optim.optim import compiled
from research_optim.optim.compiled import restrict_scalars

KERNEL = """
#include <torch/csrc/inductor/cpp_prefix.h>
extern "C"  void  kernel(const double* in_ptr0,
                       const float* in_ptr1,
                       const double* in_ptr10,
                       int32_t* out_ptr0,
                       float* out_ptr1,
                       const int64_t ks0)
{
    for(int64_t x0=static_cast<int64_t>(0L); x0<static_cast<int64_t>(ks0); x0+=static_cast<int64_t>(8L))
    {
        auto tmp0 = in_ptr0[static_cast<int64_t>(0L)];
        auto tmp1 = at::vec::Vectorized<float>::loadu(in_ptr1 + static_cast<int64_t>(x0), static_cast<int64_t>(8));
        auto tmp2 = in_ptr10[static_cast<int64_t>(x0)];
        auto tmp3 = out_ptr0[static_cast<int64_t>(0L)];
        tmp1.store(out_ptr1 + static_cast<int64_t>(x0));
    }
}
"""


def test_only_the_pointers_read_at_index_zero_are_restricted():
    out = restrict_scalars(KERNEL)
    signature = out[out.index(" kernel("):out.index("{")]
    assert "const double* __restrict__ in_ptr0," in signature
    assert "int32_t* __restrict__ out_ptr0," in signature  # a count written by one loop, read by the next
    for untouched in ("const float* in_ptr1,", "const double* in_ptr10,", "float* out_ptr1,"):
        assert untouched in signature  # elements, indexed by x0 (in_ptr10 is not in_ptr1's scalar twin)
    assert out[out.index("{"):] == KERNEL[KERNEL.index("{"):]  # the body is left as it is
    assert restrict_scalars("no kernel here") == "no kernel here"


def _adds_scalar_(p: torch.Tensor, s: torch.Tensor) -> None:
    p.add_(s * 2)


def _bumps_scalar_(p: torch.Tensor, s: torch.Tensor) -> None:
    s.add_(1)  # writes its one-element input: no __restrict__
    p.add_(s)


def _bumps_a_view_of_scalar_(p: torch.Tensor, s: torch.Tensor) -> None:
    t = s.view(1)
    t.mul_(2)
    p.add_(t)


def _stacks_scalar_(p: torch.Tensor, s: torch.Tensor) -> None:
    p.add_(torch.stack([s, s * 2]).sum())  # a list argument holding the scalar


def _writes_scalar_through_out_(p: torch.Tensor, s: torch.Tensor) -> None:
    torch.add(s, 1, out=s)
    p.add_(s)


def _writes_scalar_through_an_aten_op_(p: torch.Tensor, s: torch.Tensor) -> None:
    torch.ops.aten.add_.Tensor(s, s)
    p.add_(s)


@pytest.mark.slow  # compiles
@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable")
@pytest.mark.parametrize("fn, writes", [(_adds_scalar_, False), (_stacks_scalar_, False), (_bumps_scalar_, True),
                                        (_bumps_a_view_of_scalar_, True), (_writes_scalar_through_out_, True),
                                        (_writes_scalar_through_an_aten_op_, True)])
def test_a_graph_that_writes_a_one_element_input_is_left_unrestricted_and_stays_right(fn, writes, monkeypatch):
    decisions = []
    original = compiled._writes_a_scalar
    monkeypatch.setattr(compiled, "_writes_a_scalar", lambda gm, ex: decisions.append(original(gm, ex)) or
                        decisions[-1])
    p, s = torch.zeros(1000), torch.tensor(1.0, dtype=torch.float64)
    expected_p, expected_s = torch.zeros(1000), s.clone()
    for _ in range(3):
        compiled.call(fn, "a kind", p, s)
        fn(expected_p, expected_s)
    assert decisions and set(decisions) == {writes}  # dynamo may restart its analysis once, cold: two calls
    torch.testing.assert_close(p, expected_p)
    torch.testing.assert_close(s, expected_s)


SPY = textwrap.dedent("""
    import torch
    from torch._inductor.async_compile import AsyncCompile
    seen, original = [], AsyncCompile.cpp_pybinding
    AsyncCompile.cpp_pybinding = lambda self, argtypes, source: seen.append(source) or original(self, argtypes, source)
    from research_optim.optim.adamw import AdamW
    p = torch.nn.Parameter(torch.randn(10000)); p.grad = torch.randn(10000)
    AdamW([p], lr=1e-3, weight_decay=0.1, implementation="compiled").step()
    print(len(seen), sum("const double* __restrict__" in source for source in seen))
""")


@pytest.mark.slow  # compiles, twice, in fresh processes
@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable")
def test_a_compiled_step_builds_its_kernel_with_restricted_scalars_compiled_or_from_the_cache(tmp_path):
    """The hook point (``AsyncCompile.cpp_pybinding``) is inductor's: this fails if a torch release moves it, and
    the steps would silently lose the speed. The second process loads the graph from inductor's FX cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path), "RESEARCH_OPTIM_COMPILE": "1",
           "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", SPY], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["1", "1"], out.stdout
