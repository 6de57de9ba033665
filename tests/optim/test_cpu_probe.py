"""Inductor's probe of the CPU's vector instruction sets, run side by side by ``optim.cpu_probe``, finds what
inductor finds alone — the same ISAs, the same flags, the same extensions — and a compiled step that starts it
waits for it and steps as the reference does.

Both processes start with an empty inductor cache, so both really build and load every test library.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

ISAS = textwrap.dedent("""
    from torch._inductor import cpu_vec_isa
    isas = [(str(isa), isa.build_arch_flags(), getattr(isa, "_is_avx512_bf16_supported", None),
             getattr(isa, "_is_amx_fp16_supported", None)) for isa in cpu_vec_isa.valid_vec_isa_list()]
    print(json.dumps({"isas": isas, "picked": str(cpu_vec_isa.pick_vec_isa()), "checked": checked}))
""")

ALONE = "import json\nchecked = 0\n" + ISAS

PROBED_BY_A_STEP = textwrap.dedent("""
    import json
    import torch
    from research_optim.optim import cpu_probe
    from research_optim.optim.lion import Lion
    checked = len(cpu_probe._candidates())
    params = [torch.nn.Parameter(torch.randn(5000, generator=torch.Generator().manual_seed(0))) for _ in range(2)]
    for p in params:
        p.grad = torch.randn(5000, generator=torch.Generator().manual_seed(1))
    Lion([params[0]], lr=1e-3, weight_decay=0.1, implementation="compiled").step()
    Lion([params[1]], lr=1e-3, weight_decay=0.1, implementation="reference").step()
    torch.testing.assert_close(params[0], params[1], rtol=1e-6, atol=1e-7)
    assert cpu_probe._started and not any(t.is_alive() for t in cpu_probe._threads)
""") + ISAS


def _run(code: str, cache_dir) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir), "RESEARCH_OPTIM_COMPILE": "1",
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh processes, each building inductor's test libraries and one compiling a step
@pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile unavailable")
def test_the_probe_side_by_side_finds_what_inductor_finds_alone(tmp_path):
    probed = _run(PROBED_BY_A_STEP, tmp_path / "probed")
    alone = _run(ALONE, tmp_path / "alone")
    assert probed["isas"] == alone["isas"] and probed["picked"] == alone["picked"]
    if platform.machine() in ("x86_64", "AMD64"):  # where inductor checks by building: the probe checked them all
        assert probed["checked"] >= len(alone["isas"]) > 0

