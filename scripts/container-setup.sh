#!/usr/bin/env bash
# Make this machine able to build and run imnet64's images without a Docker engine:
# podman + buildah + runc + debootstrap from Debian, and the containers.conf settings that
# podman 4.3 needs on hosts like CI's (hybrid cgroups, no systemd, capped ulimits); and the
# shell linter the container test runs on these scripts (Debian package shellcheck).
#
# Usage: scripts/container-setup.sh
# As root with apt it installs what is missing; otherwise it names what is missing and fails.
# Re-running it changes nothing once everything is in place.
set -euo pipefail

packages=(podman buildah runc debootstrap shellcheck)
conf=/etc/containers/containers.conf

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "imnet64: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "imnet64: missing system packages: ${missing[*]}" >&2
    echo "imnet64: ask an administrator to run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# Settings (one per "key = value" line, all in the [containers]/[engine] tables):
#  - runtime runc: crun 1.8 fails on hybrid-cgroup hosts;
#  - cgroupfs + file events logger: there is no systemd/journald to talk to;
#  - default_ulimits: podman's default raises nofile beyond what a sandboxed root may set.
declare -A want_containers=(
  [default_ulimits]='["nofile=1024:20000", "nproc=4096:4096"]'
)
declare -A want_engine=(
  [runtime]='"runc"'
  [cgroup_manager]='"cgroupfs"'
  [events_logger]='"file"'
)

has_setting() {  # has_setting KEY: is KEY set (uncommented) anywhere in $conf?
  [ -f "$conf" ] && grep -Eq "^[[:space:]]*${1}[[:space:]]*=" "$conf"
}

# Add only settings that are absent: an existing file (and any value an administrator chose
# on purpose) is left as it is. New keys go right under their table header, which is
# created at the end of the file if missing.
add_setting() {  # add_setting TABLE KEY VALUE
  local table=$1 key=$2 value=$3
  has_setting "$key" && return 0
  if [ ! -w "$(dirname "$conf")" ] && [ ! -w "$conf" ]; then
    echo "imnet64: $conf lacks '$key = $value' and is not writable; ask an administrator" >&2
    return 1
  fi
  touch "$conf"
  if grep -q "^\[$table\]" "$conf"; then
    sed -i "/^\[$table\]/a $key = $value" "$conf"
  else
    printf '\n[%s]\n%s = %s\n' "$table" "$key" "$value" >>"$conf"
  fi
  echo "imnet64: $conf: [$table] $key = $value" >&2
}

mkdir -p "$(dirname "$conf")" 2>/dev/null || true
for key in "${!want_containers[@]}"; do add_setting containers "$key" "${want_containers[$key]}"; done
for key in "${!want_engine[@]}"; do add_setting engine "$key" "${want_engine[$key]}"; done

# Values that exist but differ from what works here are reported, not overwritten.
for key in "${!want_engine[@]}"; do
  grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*${want_engine[$key]}" "$conf" \
    || echo "imnet64: note: $conf sets $key differently from ${want_engine[$key]}" >&2
done
exit 0
