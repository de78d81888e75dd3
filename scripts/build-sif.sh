#!/usr/bin/env bash
# Build imnet64.sif (Apptainer/Singularity) from apptainer.def and a local Docker/podman image.
#
# Usage: scripts/build-sif.sh [IMAGE|ARCHIVE.tar] [OUT.sif]   (default: imnet64:latest -> imnet64.sif)
#   ARCHIVE.tar: an image saved with `docker save` (or `podman save --format docker-archive`),
#   e.g. carried to a login node that has Apptainer but no Docker.
# Env:   ENGINE (default: podman if installed, else docker): where IMAGE lives
#
# The image is exported with `save` into an archive and the def file is built from that
# archive (`Bootstrap: docker-archive`), so no Docker daemon socket is needed; everything
# else comes from apptainer.def unchanged.
set -euo pipefail

image=${1:-imnet64:latest}
out=${2:-imnet64.sif}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
engine=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}

apptainer=$(command -v apptainer || command -v singularity || true)
if [ -z "$apptainer" ]; then
  cat >&2 <<EOF
imnet64: 'make sif' needs Apptainer (or SingularityCE), which is not installed here.
imnet64: It is in neither Debian nor PyPI: install it from https://apptainer.org/docs/admin/main/installation.html,
imnet64: Or save the image here and build the .sif where Apptainer is (e.g. a login node):
imnet64:   $(basename "$engine") save$([ "$(basename "$engine")" = podman ] && echo " --format docker-archive") -o imnet64.tar $image
imnet64:   scripts/build-sif.sh imnet64.tar $out      (there, in a copy of this repository)
EOF
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/imnet64-sif.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -f "$image" ]; then
  archive=$(cd "$(dirname "$image")" && pwd)/$(basename "$image")
else
  archive=$work/image.tar
  save_args=()
  [ "$(basename "$engine")" = podman ] && save_args=(--format docker-archive)
  "$engine" save "${save_args[@]}" -o "$archive" "$image"
fi

# Same recipe, bootstrapped from the archive instead of the daemon.
sed -e "s|^Bootstrap:.*|Bootstrap: docker-archive|" -e "s|^From:.*|From: $archive|" \
  "$repo/apptainer.def" >"$work/apptainer.def"
"$apptainer" build --force "$out" "$work/apptainer.def"
echo "imnet64: built $out from $image" >&2
