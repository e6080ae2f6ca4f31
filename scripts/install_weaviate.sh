#!/usr/bin/env bash
# Build the Weaviate server from the Go module proxy once, into the user cache (outside the repo).
# Reused when present. Override the version with WEAVIATE_VERSION (must be supported by
# weaviate-client 4.23.1, i.e. >= v1.27).
#
# One small source patch is applied (scripts/weaviate/listen-host.patch): upstream binds the public
# gRPC port and the cluster data port on every interface whatever --host says (weaviate/weaviate
# issue #5898), so an embedded server would serve every tenant's data, unauthenticated, to the
# network. The patch makes those listeners honour WEAVIATE_LISTEN_HOST (unset = upstream behaviour);
# the embedded server sets it to 127.0.0.1. The patch's hash is part of the cache folder's name, so a
# changed patch rebuilds, and hybrid_assets/store/server.py computes the same name.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${WEAVIATE_VERSION:-v1.35.2}"
cache="${HYBRID_CACHE_DIR:-$HOME/.cache/hybrid_assets}"
patch_file="scripts/weaviate/listen-host.patch"
build_id="$(sha256sum "$patch_file" | cut -c1-8)"
dest="$cache/weaviate/$version-$build_id"
if [ -x "$dest/weaviate-server" ]; then
  echo "weaviate-server $version (patch $build_id): cached at $dest"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build weaviate-server (https://go.dev/dl)"; exit 1; }
echo "building weaviate-server $version from the Go module proxy (first time only, ~3-6 min)..."
start=$(date +%s)
module_dir="$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/weaviate/weaviate@$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$module_dir" ] || { echo "error: go mod download gave no source folder for weaviate $version"; exit 1; }
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r "$module_dir/." "$src/" && chmod -R u+w "$src"
patch_abs="$(pwd)/$patch_file"
(cd "$src" && git apply -p1 "$patch_abs") \
  || { echo "error: $patch_file does not apply to weaviate $version; update the patch for this version"; exit 1; }
mkdir -p "$dest.partial"
(cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$dest.partial/weaviate-server" ./cmd/weaviate-server)
rm -rf "$dest" && mv "$dest.partial" "$dest"   # atomic from the reader's point of view
echo "built weaviate-server $version (patch $build_id) in $(( $(date +%s) - start ))s -> $dest"
