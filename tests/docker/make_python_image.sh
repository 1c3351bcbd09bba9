#!/usr/bin/env bash
# Make a Debian bookworm image with python3 (3.11) without a registry:
# debootstrap a minimal root filesystem from the mirror apt uses, then `docker import` it.
#
#   tests/docker/make_python_image.sh TAG [ROOTFS_TARBALL]
#
# With ROOTFS_TARBALL: an existing tarball is imported as is (skips the ~50 s debootstrap);
# a missing one is written there (atomically) for the next run.
# Needs root (debootstrap), debootstrap, and a reachable Docker daemon ($DOCKER_HOST).
# The mirror is the first bookworm source in /etc/apt/sources.list{,.d/*}, or $DEBIAN_MIRROR.
set -euo pipefail

tag=${1:?usage: make_python_image.sh TAG [ROOTFS_TARBALL]}
tarball=${2:-}
suite=bookworm

say() { echo "make_python_image: $*" >&2; }
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT

apt_mirror() {
  # One-line format: deb [opts] URI SUITE COMPONENTS...
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
  awk -v suite="$suite" '
    $1 == "deb" {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i+1) == suite) { print $i; exit }
    }' "${files[@]}" 2>/dev/null | head -n1
  # deb822 format: URIs: / Suites: stanzas separated by blank lines.
  awk -v suite="$suite" '
    BEGIN { RS = ""; FS = "\n" }
    {
      uris = ""; ok = 0; deb = 0
      for (n = 1; n <= NF; n++) {
        if ($n ~ /^Types:.*(^|[ \t])deb([ \t]|$)/) deb = 1
        if ($n ~ /^URIs:/) { uris = $n; sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/); uris = u[1] }
        if ($n ~ /^Suites:/) { s = $n; sub(/^Suites:[ \t]*/, "", s); m = split(s, w, /[ \t]+/)
                               for (k = 1; k <= m; k++) if (w[k] == suite) ok = 1 }
      }
      if (deb && ok && uris != "") { print uris; exit }
    }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1
}

make_rootfs_tarball() {  # make_rootfs_tarball OUT
  local out=$1 mirror dir
  mirror=${DEBIAN_MIRROR:-$(apt_mirror | head -n1)}
  mirror=${mirror:-http://deb.debian.org/debian}
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] ||
    { say "debootstrap is missing (apt-get install -y debootstrap)"; exit 1; }
  [ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }
  dir=$(mktemp -d "${TMPDIR:-/var/tmp}/llmbuild-rootfs.XXXXXX")
  cleanup+=("$dir" "$dir.log" "$out.tmp.$$")
  say "debootstrap $suite from $mirror (about a minute)"
  PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase --include=python3,python3-venv \
      "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { say "debootstrap failed; last lines of its log:"; tail -n 20 "$dir.log" >&2; exit 1; }
  rm -f "$dir.log"
  # Smaller and reproducible enough: no apt lists or caches in the image.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*
  mkdir -p "$(dirname "$out")"
  tar --numeric-owner -C "$dir" -cf "$out.tmp.$$" .
  mv -f "$out.tmp.$$" "$out"
  rm -rf "$dir"
}

if [ -n "$tarball" ]; then
  if [ -s "$tarball" ]; then
    say "reusing root filesystem $tarball"
  else
    make_rootfs_tarball "$tarball"
  fi
  src=$tarball
else
  src=$(mktemp "${TMPDIR:-/var/tmp}/llmbuild-rootfs.XXXXXX.tar")
  cleanup+=("$src")
  make_rootfs_tarball "$src"
fi

say "docker import as $tag"
docker import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' "$src" "$tag" >/dev/null
docker image inspect --format '{{.Id}}' "$tag"
