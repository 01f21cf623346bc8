#!/usr/bin/env bash
# Fetches and builds what benches/kafka.rs drives, into the directory given (skipping what is
# already there): the Apache Kafka broker and its tools (jars from Maven Central, by
# benches/kafka/pom.xml) and librdkafka's rdkafka_performance, built from the librdkafka
# source the npm package node-rdkafka ships (as tests/librdkafka/build.sh does).
# Usage: benches/kafka/tools.sh <dir>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
if [ ! -f "$dir/libs.done" ]; then
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dir/libs"
  touch "$dir/libs.done"
fi
if [ ! -x "$dir/rdkafka_performance" ]; then
  version=3.6.1 # node-rdkafka 3.6.1 carries librdkafka 2.12.0
  cd "$dir"
  npm pack --silent "node-rdkafka@$version" > /dev/null
  tar xzf "node-rdkafka-$version.tgz"
  cd package/deps/librdkafka
  ./configure --disable-gssapi > "$dir/configure-output.txt" 2>&1 || { cat "$dir/configure-output.txt"; exit 1; }
  make -j"$(nproc)" libs > "$dir/make-output.txt" 2>&1 || { tail -50 "$dir/make-output.txt"; exit 1; }
  make -C examples rdkafka_performance >> "$dir/make-output.txt" 2>&1 || { tail -50 "$dir/make-output.txt"; exit 1; }
  # Statically linked against the librdkafka just built.
  cp examples/rdkafka_performance "$dir/rdkafka_performance"
fi
