#!/usr/bin/env bash
# Regenerates Sources/OpAMPProtocol/*.pb.swift from proto/. Run by hand after editing proto/ and commit
# the result; CI never runs it (building protoc takes minutes). protoc and protoc-gen-swift are both
# built from the swift-protobuf package this project already depends on.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product protoc-gen-swift
swift build -c release --product protoc
bin=$(swift build -c release --show-bin-path)
rm -f Sources/OpAMPProtocol/*.pb.swift
"$bin/protoc" --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --swift_out=Sources/OpAMPProtocol --swift_opt=Visibility=Public \
    -I proto proto/opamp.proto proto/anyvalue.proto
echo "generated: $(ls Sources/OpAMPProtocol/*.pb.swift | tr '\n' ' ')"
