#!/usr/bin/env bash
# Install the Debian packages imnet64 needs to build Horovod (MPI + compilers).
# Usage: scripts/install-system-deps.sh [extra-package ...]
# As root with apt it installs what is missing; otherwise it names what is missing and fails.
set -euo pipefail

packages=(g++ make cmake openmpi-bin libopenmpi-dev "$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "imnet64: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "imnet64: missing system packages: ${missing[*]}" >&2
  echo "imnet64: ask an administrator to run: apt-get install ${missing[*]}" >&2
  echo "imnet64: (or load the equivalent modules, e.g. 'module load openmpi cmake gcc')" >&2
  exit 1
fi
