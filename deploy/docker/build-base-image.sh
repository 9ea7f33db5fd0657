#!/usr/bin/env bash
# Build a local Debian base image (Python 3 + venv) without pulling from a registry.
#
# Where no image registry can be reached (air-gapped CI, offline laptops), the Dockerfile's
# BASE_IMAGE can be any Debian with python3 and python3-venv. This script makes one with
# debootstrap from Debian's package mirror and `docker import`s it. The rootfs tarball is cached,
# so only the first run pays for debootstrap.
#
# Usage: build-base-image.sh [TAG]            (default tag: weightserve-base:bookworm)
# Env:   WEIGHTSERVE_CACHE_DIR  cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/weightserve)
#        DEBIAN_MIRROR          mirror URL   (default: http://deb.debian.org/debian)
#        DOCKER                 docker CLI   (default: docker; DOCKER_HOST is honoured)
set -euo pipefail

tag="${1:-weightserve-base:bookworm}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache_dir="${WEIGHTSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weightserve}"
tarball="$cache_dir/base-$suite-python3.tar"
docker_cli="${DOCKER:-docker}"

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 2; }
    mkdir -p "$cache_dir"
    work="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    rootfs="$work/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 40 "$work/debootstrap.log" >&2; exit 1; }
    # An image needs neither package lists nor docs; they would only add size.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
    tar --numeric-owner -C "$rootfs" -cf "$work/base.tar" .
    mv "$work/base.tar" "$tarball"
fi

"$docker_cli" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$tag" >/dev/null
echo "$tag"
