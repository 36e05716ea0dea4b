#!/usr/bin/env bash
# Builds flowlat's container image from scratch with the static binary:
#
#   contrib/kubernetes/build-image.sh [--binary PATH] [--tag NAME:TAG]
#
# Without --binary it builds the static binary first (cargo build --release
# --target x86_64-unknown-linux-musl). The tag defaults to flowlat:VERSION,
# VERSION from Cargo.toml. Uses podman, else docker; then push the image to
# your registry and set it in 20-daemonset.yaml.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
binary=""
tag="flowlat:$version"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--tag NAME:TAG]" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked --target x86_64-unknown-linux-musl)
    binary="$root/target/x86_64-unknown-linux-musl/release/flowlat"
fi
if command -v podman >/dev/null; then
    engine=podman
elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=docker
else
    echo "$0: neither podman nor a working docker is installed" >&2
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/Containerfile" "$context/Containerfile"
# Symbols are for backtraces on a developer's machine; the image needs none.
strip -o "$context/flowlat" "$binary"
"$engine" build --quiet --file "$context/Containerfile" --build-arg "VERSION=$version" \
    --tag "$tag" "$context" >/dev/null
echo "$tag"
