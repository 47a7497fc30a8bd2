#!/usr/bin/env bash
# The release Lambdas as infra/template.yaml deploys them (arm64): their sizes, the newest glibc
# symbol version they need (the provided.al2023 runtime has glibc 2.34), and, with qemu-user,
# sync-lambda handling a 10,000-record event under emulation through the latency bench's Runtime
# API harness (the bench asserts the exact response; emulated timings say nothing about arm64).
# Needs Debian's gcc-aarch64-linux-gnu (linker and C compiler for ring); qemu-user for the run.
# `sam build` uses cargo-lambda and zig instead: same profile, same code.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
command -v aarch64-linux-gnu-gcc >/dev/null ||
  { echo "needs aarch64-linux-gnu-gcc: apt-get install gcc-aarch64-linux-gnu" >&2; exit 1; }
rustup target add "$target" 2>&1 | tail -1
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo build --release --locked --target "$target" --bin sync-lambda --bin reset-lambda 2>&1 | tail -1
for b in sync-lambda reset-lambda; do
  f="target/$target/release/$b"
  bytes=$(stat -c %s "$f")
  glibc=$(aarch64-linux-gnu-objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  echo "$b (arm64): $bytes bytes = $(python3 -c "print(round($bytes/1048576, 2))") MiB (anchor <= 8 MiB); newest symbol $glibc"
done
if command -v qemu-aarch64 >/dev/null; then
  wrapper="target/$target/sync-lambda-qemu"
  printf '#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu %s "$@"\n' \
    "$PWD/target/$target/release/sync-lambda" >"$wrapper"
  chmod +x "$wrapper"
  cargo bench --locked --bench latency -- --lambda "$wrapper" 2>&1 | grep -A2 "^sync-lambda ("
fi
