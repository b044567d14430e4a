#!/usr/bin/env bash
# A CPU bench on the lent GPU machine, whose Python has no openfhe: a relocatable CPython 3.10 with einfhe's
# dependencies (numpy, openfhe, opt_einsum) travels with the tree as .gpu_carry/py310.tar.xz, is unpacked there
# once, and runs the bench (stopped with SIGINT after BUDGET seconds, default 500, so that a bench can print what
# it finished) with OMP OpenMP threads (default 1). Output: OUT/bench.txt, and the machine's CPUs and memory in OUT/machine.txt.
#
#   bash bench/cpu_round.sh prepare                    # here: .gpu_carry/py310.tar.xz from pyenv's 3.10.13 + .venv
#   BUDGET=540 OMP=4 bash bench/cpu_round.sh bench/transformer_encrypted.py --data .gpu_carry/minilm_l6.npz ...
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = prepare ]; then
  stage=$(mktemp -d) && mkdir -p "$stage/py" .gpu_carry
  cp -a "$(PYENV_VERSION=3.10.13 pyenv prefix)"/{bin,include,lib,share} "$stage/py/"
  site=$(ls -d .venv/lib/python3.10/site-packages)
  cp -a "$site"/numpy* "$site"/openfhe* "$site"/opt_einsum* "$stage/py/lib/python3.10/site-packages/"
  tar -cJf .gpu_carry/py310.tar.xz -C "$stage" py && rm -rf "$stage"
  exit
fi
[ -x /tmp/b/py/bin/python3.10 ] || { mkdir -p /tmp/b && tar -xJf .gpu_carry/py310.tar.xz -C /tmp/b; }
export LD_LIBRARY_PATH=/tmp/b/py/lib PYTHONPATH=$PWD OMP_NUM_THREADS=${OMP:-1}
{ lscpu | grep -E "Model name|^CPU\(s\)|Thread|MHz"; free -g | head -2; } >> "$OUT/machine.txt"
timeout -s INT -k 30 "${BUDGET:-500}" /tmp/b/py/bin/python3.10 "$@" 2>&1 | tee -a "$OUT/bench.txt"
