#!/usr/bin/env bash
# Make the CPU variant's base image locally, for machines that cannot pull from a registry
# (CI here): a minimal Debian bookworm from debootstrap, imported into podman and tagged with
# the name the Dockerfile's FROM uses for the CPU variant, so `podman build --pull=never`
# builds the Dockerfile unchanged.
#
# Usage: scripts/make-base-image.sh [IMAGE]   (default docker.io/library/debian:bookworm-slim)
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian),
#        DEBIAN_SECURITY_MIRROR (default: DEBIAN_MIRROR with debian -> debian-security)
# Skips all work when IMAGE already exists. Needs root (debootstrap) and podman
# (scripts/container-setup.sh installs both).
set -euo pipefail

image=${1:-docker.io/library/debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}

if podman image exists "$image"; then
  echo "imnet64: base image $image exists; nothing to do" >&2
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "imnet64: debootstrap needs root" >&2; exit 1; }

root=$(mktemp -d /var/tmp/imnet64-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

start=$SECONDS
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Like the official image: updates and security suites in deb822 form, no caches/logs.
rm -f "$root/etc/apt/sources.list"
cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log

tar -C "$root" --numeric-owner -c . \
  | podman import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "imnet64: made $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)" \
  "in $((SECONDS - start)) s" >&2
