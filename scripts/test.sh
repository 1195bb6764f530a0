#!/usr/bin/env bash
# Postern's test command: installs what the tests need, runs the whole workspace's tests as the invoking
# user, and — when that user is root — runs the sandbox and whole-system tests a second time as an
# unprivileged user (`nobody`), where the identity checks are skipped and landlock, seccomp and the
# --dev mode of the master are proven instead.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --workspace --bins
cargo test --workspace

if [ "$(id -u)" != 0 ]; then
    exit 0
fi

# The unprivileged pass runs the already built test executables; `cargo test --no-run` names them.
unprivileged=nobody
mapfile -t executables < <(
    cargo test --workspace --no-run 2>&1 |
        sed -n 's/^ *Executable \(tests\/[a-z_]*\.rs\) (\(.*\))$/\1 \2/p' |
        grep -E '^tests/(enforcement|master|handshake|cli|queue_list|intake|durability|delivery|local_mailboxes|accounts)\.rs ' | cut -d' ' -f2
)
if [ "${#executables[@]}" -eq 0 ]; then
    echo "test.sh: no executables found for the unprivileged pass" >&2
    exit 1
fi
work=$(mktemp -d /tmp/postern-unprivileged.XXXXXX)
chmod 0777 "$work"
trap 'rm -rf "$work"' EXIT
for exe in "${executables[@]}"; do
    exe=$(realpath "$exe")
    if ! runuser -u "$unprivileged" -- test -x "$exe"; then
        echo "test.sh: $exe is not reachable by $unprivileged; the checkout must be world-readable" >&2
        exit 1
    fi
    echo "== as $unprivileged: $(basename "$exe")"
    (cd "$work" && runuser -u "$unprivileged" -- env TMPDIR="$work" HOME="$work" "$exe")
done
