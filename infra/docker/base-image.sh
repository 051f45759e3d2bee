#!/usr/bin/env bash
# A local base image for the model images, from Debian packages only (for machines that reach a
# Debian mirror but no image registry): debootstrap + docker import.
#   infra/docker/base-image.sh [TAG] [SUITE] [MIRROR]
# Then: trustflow deploy --target docker --base-image TAG (default trustflow-base:bookworm).
# bookworm's python3 is 3.11, the project's Python. Needs root, debootstrap and a Docker daemon.
set -euo pipefail
tag=${1:-trustflow-base:bookworm}
suite=${2:-bookworm}
mirror=${3:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$rootfs" "$mirror" >/dev/null
# What an image does not need: package lists, caches, documentation.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
echo "$tag"
