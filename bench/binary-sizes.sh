#!/usr/bin/env bash
# The shipped binaries' sizes against their limits: builds each as released, alone (`cargo build --release -p
# NAME`: stripped, thin LTO; see [profile.release] in Cargo.toml), prints one line per binary, and exits 1 if one
# is over. Alone, as `cargo install` and the images build them: built in one command with the scheduler, a
# binary gets the features every package of the command asks of a shared crate (Cargo unifies them), and
# pm-agent is ~0.55 MB larger.
#
#   bench/binary-sizes.sh
#
# Limits (bytes, decimal): pm-agent 10,000,000 (every pipeline pod runs one), pm 25,000,000. The static
# agent of the images has its own, smaller limit (5 MB), checked by tests/images.rs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bins=(pm pm-agent pm-scheduler pmctl pm-loadtest)
declare -A limit=([pm-agent]=10000000 [pm]=25000000)
over=0
printf '%-14s %12s %12s\n' BINARY BYTES LIMIT
for b in "${bins[@]}"; do
  cargo build --release --locked -p "$b" >&2
  size=$(stat -c %s "target/release/$b")
  max="${limit[$b]:-}"
  printf '%-14s %12s %12s\n' "$b" "$size" "${max:--}"
  if [[ -n "$max" && "$size" -gt "$max" ]]; then
    echo "$b is over its limit: $size > $max bytes" >&2
    over=1
  fi
done
exit "$over"
