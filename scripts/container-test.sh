#!/usr/bin/env bash
# CI's container test, runnable on any root Debian machine without a Docker engine or registry:
#   1. podman/buildah/runc/debootstrap and their settings (scripts/container-setup.sh)
#   2. lint: hadolint on the Dockerfile, and on apptainer.def translated into a Dockerfile by
#      spython; shellcheck on the container scripts
#   3. the CPU variant's base image made locally (debootstrap + import, cached)
#   4. `make image-cpu` with podman (--pull=never), then an image from the translated def
#   5. tests/test_container.py against both images (demo, teacher, Horovod, environment)
# Prints the time of each step. Usage: scripts/container-test.sh   (as root; `make container-test`)
# Env: VENV (default .venv: pytest + the lint tools), IMAGE (default imnet64),
#      PIP_CERT (CA bundle for pip in the build; default: the system bundle)
# The step functions below run through `step NAME FUNCTION`, which shellcheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
image=${IMAGE:-imnet64}
out=build/container-test
mkdir -p "$out"
# Behind a TLS-intercepting proxy the build's pip needs the machine's CA bundle.
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi

timings=()
step() {  # step NAME COMMAND...: run it, remember how long it took
  local name=$1 start=$SECONDS rc=0
  shift
  echo "== container-test: $name" >&2
  "$@" || rc=$?
  local note=""
  [ "$rc" -eq 0 ] || note="  (failed, exit $rc)"
  timings+=("$(printf '%-24s %5d s%s' "$name" $((SECONDS - start)) "$note")")
  return "$rc"
}

tools() {
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r requirements/container.txt
}

lint() {
  "$venv/bin/hadolint" --config .hadolint.yaml Dockerfile
  # The def file as a Dockerfile, bootstrapped from the CPU image built below. DL3025 (JSON
  # CMD) is the translator's: %runscript becomes a shell-form CMD.
  "$venv/bin/spython" recipe --parser singularity --writer docker apptainer.def \
    | sed "s|^FROM [^ ]*|FROM localhost/$image:cpu|" >"$out/apptainer.Dockerfile"
  "$venv/bin/hadolint" --config .hadolint.yaml --ignore DL3025 "$out/apptainer.Dockerfile"
  shellcheck scripts/container-setup.sh scripts/make-base-image.sh scripts/container-test.sh \
    scripts/install-python-deps.sh scripts/build-sif.sh
}

build_def_image() {
  # The translated def adds no files: an empty build context is enough.
  mkdir -p "$out/context"
  podman build --format docker --pull=never -f "$out/apptainer.Dockerfile" \
    -t "localhost/$image:cpu-apptainer" "$out/context"
}

step setup scripts/container-setup.sh
step "lint tools" tools
step lint lint
step "base image" scripts/make-base-image.sh
step "build cpu image" make --no-print-directory image-cpu ENGINE=podman IMAGE="$image" \
  BUILD_FLAGS=--pull=never
step "build def image" build_def_image
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "/$image:" >&2 || true
status=0
IMNET64_TEST_IMAGE="localhost/$image:cpu" IMNET64_TEST_DEF_IMAGE="localhost/$image:cpu-apptainer" \
  step "image tests" "$venv/bin/pytest" -q -m container tests/test_container.py || status=$?

echo "== container-test timings" >&2
printf '  %s\n' "${timings[@]}" >&2
exit "$status"
