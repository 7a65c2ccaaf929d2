#!/usr/bin/env bash
# Unpack Fashion-MNIST from Debian's `dataset-fashion-mnist` package into DEST/fashion-mnist,
# unless it is already installed system-wide. Best effort: exits non-zero if it cannot.
set -euo pipefail
dest="${1:-.data}/fashion-mnist"
system=/usr/share/datasets/fashion-mnist
deb_sha256=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
if [ -f "$system/train-images-idx3-ubyte.gz" ] || [ -f "$dest/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
command -v apt-get >/dev/null || { echo "apt-get not found" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q dataset-fashion-mnist 2>/dev/null)
deb=$(ls "$tmp"/dataset-fashion-mnist_*.deb)
echo "$deb_sha256  $deb" | sha256sum -c --quiet -
dpkg -x "$deb" "$tmp/root"
mkdir -p "$dest"
cp "$tmp/root$system"/*-ubyte.gz "$dest/"
echo "Fashion-MNIST unpacked to $dest"
