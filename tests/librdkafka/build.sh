#!/usr/bin/env bash
# Builds librdkafka's own test suite (tests/test-runner) from the librdkafka source that the
# npm package node-rdkafka ships in deps/librdkafka, into the directory given.
# Usage: tests/librdkafka/build.sh <dir>
set -euo pipefail
version=3.6.1 # node-rdkafka 3.6.1 carries librdkafka 2.12.0
dir=$(cd "$1" && pwd)
cd "$dir"
npm pack --silent "node-rdkafka@$version" > /dev/null
tar xzf "node-rdkafka-$version.tgz"
cd package/deps/librdkafka
# (Not configure.log: mklove would take a configure.* file here for one of its modules.)
./configure --disable-gssapi > "$dir/configure-output.txt" 2>&1 || { cat "$dir/configure-output.txt"; exit 1; }
jobs=$(nproc)
make -j"$jobs" libs > "$dir/make-output.txt" 2>&1 || { tail -50 "$dir/make-output.txt"; exit 1; }
make -j"$jobs" -C tests build >> "$dir/make-output.txt" 2>&1 || { tail -50 "$dir/make-output.txt"; exit 1; }
