#!/usr/bin/env bash
# Build the Weaviate server from the Go module proxy once, into the user cache (outside the repo).
# Reused when present. Override the version with WEAVIATE_VERSION (must be supported by
# weaviate-client 4.23.1, i.e. >= v1.27).
set -euo pipefail
version="${WEAVIATE_VERSION:-v1.35.2}"
cache="${HYBRID_CACHE_DIR:-$HOME/.cache/hybrid_assets}"
dest="$cache/weaviate/$version"
if [ -x "$dest/weaviate-server" ]; then
  echo "weaviate-server $version: cached at $dest"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is required to build weaviate-server (https://go.dev/dl)"; exit 1; }
mkdir -p "$dest.partial"
echo "building weaviate-server $version from the Go module proxy (first time only, ~3-6 min)..."
start=$(date +%s)
GOBIN="$dest.partial" GOFLAGS=-mod=mod go install "github.com/weaviate/weaviate/cmd/weaviate-server@$version"
rm -rf "$dest" && mv "$dest.partial" "$dest"   # atomic from the reader's point of view
echo "built weaviate-server $version in $(( $(date +%s) - start ))s -> $dest"
