#!/usr/bin/env bash
# GPU check for llm_magic (issue 13): build llama-cpp-python 0.3.36 with CUDA for one GPU
# architecture, then measure Gemma 3 270M (its exact tensors, random weights: see gpu_check.py)
# through llm_magic with every layer on the GPU against none.
#
#   bash benchmarks/gpu_check.sh prepare   # here, once: fills .gpu/ (~11 MiB) and ignores it in git
#   bash benchmarks/gpu_check.sh           # on the GPU machine, from the repository root, .gpu/ carried
#
# On the GPU machine nothing can be downloaded: .gpu/ holds the slimmed sdist, two pure-Python
# wheels and the Gemma skeleton. Results go to $OUT (or ./gpu_check_out): gpu_check.md/json, the
# relevant load-log lines and the build log's tail.
#
# Knobs: GPU_CHECK_CMAKE_ARGS (default: CUDA for compute capability 9.0, the H100/H200), GPU_CHECK_JOBS
# (default: all cores), GPU_CHECK_SKIP_BUILD=1 (use the llama-cpp-python already importable: the CPU
# path, for a dry run here), GPU_CHECK_PYTHON (default: python3), GPU_CHECK_BUILD_TIMEOUT (seconds, 480).
set -euo pipefail

cd "$(dirname "$0")/.."
CARRY=.gpu
PY=${GPU_CHECK_PYTHON:-python3}

if [[ "${1:-}" == "prepare" ]]; then
    PY=${GPU_CHECK_PYTHON:-.venv/bin/python}
    "$PY" benchmarks/gpu_check.py prepare "$CARRY"
    mkdir -p .git/info
    grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >>.git/info/exclude
    du -sh "$CARRY"
    exit 0
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
SRC=$WORK/llama_cpp_python-0.3.36
BUILD=$WORK/build
JOBS=${GPU_CHECK_JOBS:-$(nproc)}
CMAKE_ARGS=${GPU_CHECK_CMAKE_ARGS--DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90}
export PYTHONUNBUFFERED=1
started=$(date +%s)
stamp() { echo "[gpu_check $(($(date +%s) - started)) s] $*"; }

stamp "machine: $(nproc) cores; $(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo 'no nvidia-smi')"
command -v nvcc >/dev/null && stamp "$(nvcc --version | tail -1)"
stamp "$("$PY" --version); cmake $(cmake --version | head -1 | awk '{print $3}'); ninja $(ninja --version 2>/dev/null || echo none)"

# pure-Python dependencies the image lacks
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$CARRY"/wheels/*.whl
export PYTHONPATH="$PWD:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${GPU_CHECK_SKIP_BUILD:-0}" != "1" ]]; then
    rm -rf "$SRC" "$BUILD"
    mkdir -p "$WORK"
    tar -xzf "$CARRY"/llama_cpp_python-0.3.36-slim.tar.gz -C "$WORK"
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    configure() {
        rm -rf "$BUILD"
        # shellcheck disable=SC2086  # CMAKE_ARGS is a list of -D flags
        # LLAVA_BUILD=OFF: no libmtmd (vision only; llm_magic loads text models without it)
        cmake -S "$SRC" -B "$BUILD" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CCACHE=OFF -DLLAVA_BUILD=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
            -DCMAKE_INSTALL_PREFIX="$BUILD/prefix" -DSKBUILD_PLATLIB_DIR="$BUILD/platlib" \
            $CMAKE_ARGS "$@" >"$OUT/build.log" 2>&1
    }
    stamp "configure: $CMAKE_ARGS"
    if ! configure; then
        # A CUDA toolkit without cuBLAS (or the driver library where CMake looks): take them from
        # the pip packages PyTorch uses (nvidia-cublas: nvidia/cu13/{include,lib}) and the driver.
        grep -E "CUDA::(cublas|cuda_driver)" "$OUT/build.log" | head -3
        site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        header=$(find "$site/nvidia" -name cublas_v2.h 2>/dev/null | head -1 || true)
        lib=$(find "$site/nvidia" -name 'libcublas.so.*' 2>/dev/null | head -1 || true)
        driver=$(find /usr/local/cuda/lib64/stubs /usr/local/nvidia /usr/lib/x86_64-linux-gnu -name 'libcuda.so*' \
            2>/dev/null | head -1 || true)
        [[ -n "$header" && -n "$lib" && -n "$driver" ]] || { tail -40 "$OUT/build.log"; exit 1; }
        shim=$WORK/cuda-shim
        mkdir -p "$shim"
        ln -sf "$lib" "$shim/libcublas.so"
        ln -sf "$(find "$(dirname "$lib")" -name 'libcublasLt.so.*' | head -1 || true)" "$shim/libcublasLt.so"
        ln -sf "$driver" "$shim/libcuda.so"
        export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        stamp "configure again with cuBLAS from $(dirname "$lib") and the driver $driver"
        include=$(dirname "$header")
        configure -DCUDA_cublas_LIBRARY="$shim/libcublas.so" -DCUDA_cublasLt_LIBRARY="$shim/libcublasLt.so" \
            -DCUDA_cuda_driver_LIBRARY="$shim/libcuda.so" -DCMAKE_CUDA_FLAGS="-I$include" \
            -DCMAKE_CXX_FLAGS="-I$include" || { tail -40 "$OUT/build.log"; exit 1; }
    fi
    stamp "build with $JOBS jobs"
    if ! timeout "${GPU_CHECK_BUILD_TIMEOUT:-480}" cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1; then
        tail -40 "$OUT/build.log"
        stamp "build failed or timed out"
        exit 1
    fi
    cmake --install "$BUILD" >>"$OUT/build.log" 2>&1  # the libraries land in $SRC/llama_cpp/lib
    tail -5 "$OUT/build.log" >"$OUT/build_tail.log" && rm -f "$OUT/build.log"
    export PYTHONPATH="$SRC:$PYTHONPATH"
    stamp "built: $(ls "$SRC"/llama_cpp/lib | tr '\n' ' ')"
fi

"$PY" -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'from', llama_cpp.__file__, \
'gpu offload:', llama_cpp.llama_supports_gpu_offload())"

MODEL=$WORK/gemma-3-270m-shaped.gguf
stamp "fill $MODEL"
"$PY" benchmarks/gpu_check.py fill "$CARRY"/gemma-skeleton "$MODEL"
stamp "measure"
"$PY" benchmarks/gpu_check.py measure "$MODEL" "$OUT" ${GPU_CHECK_MEASURE_ARGS:-}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,temperature.gpu --format=csv,noheader
stamp "done"
