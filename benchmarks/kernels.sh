#!/usr/bin/env bash
# The C kernels' in-cache throughput at the search's shapes (benchmarks/kernels.c), for one or
# more release builds: each build's _CKernels objects are linked into the benchmark and run in
# turn, so that an older commit's kernels can be compared with this one's on the same machine
# (the bracketed checksums show whether they compute the same bits).
#
#   bash benchmarks/kernels.sh [BUILD_DIR ...]       (default: .build/release, after make build)
#
# For example, against an older commit:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && swift build -c release)
#   bash benchmarks/kernels.sh /tmp/old/.build/release .build/release
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- .build/release
CC=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
for build in "$@"; do
  objects=("$build"/_CKernels.build/*.c.o)
  [ -e "${objects[0]}" ] || { echo "error: $build has no _CKernels objects; build it first (swift build -c release)" >&2; exit 2; }
  binary=$(mktemp)
  trap 'rm -f "$binary"' EXIT
  "$CC" -O2 -I Sources/_CKernels/include benchmarks/kernels.c "${objects[@]}" -lm -o "$binary"
  echo "== $build"
  "$binary"
  rm -f "$binary"
done
