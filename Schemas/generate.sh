#!/usr/bin/env bash
# Regenerates the committed protobuf-c code from the schemas in this folder.
# Needs protoc-c (Debian package protobuf-c-compiler). Run from anywhere; output is committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

generate() { # schema-file target-module
    local schema="$1" module="$2" base
    base="$(basename "$schema" .proto)"
    protoc-c --proto_path="$here" --c_out="$tmp" "$here/$schema"
    mkdir -p "$root/Sources/$module/include"
    sed "s|#include \"$base.pb-c.h\"|#include \"include/$base.pb-c.h\"|" "$tmp/$base.pb-c.c" \
        > "$root/Sources/$module/$base.pb-c.c"
    cp "$tmp/$base.pb-c.h" "$root/Sources/$module/include/$base.pb-c.h"
}

generate onnx.proto CONNXProto
generate lance.proto CLanceProto
echo "regenerated: Sources/CONNXProto, Sources/CLanceProto"
