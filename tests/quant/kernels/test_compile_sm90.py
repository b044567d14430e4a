"""The kernels compile for an H100 (sm_90) with Triton's compiler, not only run in its interpreter.

The interpreter that runs the other kernel tests accepts code Triton's compiler refuses (a name that both
branches of a runtime ``if`` define with different shapes, for one), so compile_sm90.py compiles the kernels
that changed for the packed K tail and the static KV cache to cubins, in a fresh process without
TRITON_INTERPRET: nine full compilations, about 15 s of CPU (40 s on the two shared cores of the
project machine under load), the one check of the kernels here that a machine without a GPU can make.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton


def test_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile afresh, not from a cache
    script = Path(__file__).with_name("compile_sm90.py")
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "compiled" in result.stderr, result.stderr[-3000:]
