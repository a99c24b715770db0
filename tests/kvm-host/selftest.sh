#!/usr/bin/env bash
# Self-test of the KVM test host harness: /dev/kvm and SVM inside, the repository and a
# --share directory mounted read-write at the same paths, cwd = repository, environment
# pass-through, and the command's exit status propagated.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
share="$(mktemp -d /tmp/peapod-kvm-host-selftest.XXXXXX)"
trap 'rm -rf "$share"' EXIT
echo outside >"$share/in.txt"

set +e
PEAPOD_SELFTEST_VALUE="a b'c" "$here/run.sh" --share "$share" --timeout 300 -- sh -c '
    set -e
    test -c /dev/kvm
    grep -qw svm /proc/cpuinfo
    test "$(pwd)" = "$1"
    test -f tests/kvm-host/run.sh
    test "$(cat "$2/in.txt")" = outside
    echo inside >"$2/out.txt"
    test "$PEAPOD_SELFTEST_VALUE" = "a b'"'"'c"
    exit 42' selftest "$repo" "$share"
rc=$?
set -e
fail() { echo "kvm-host selftest: FAIL: $*" >&2; exit 1; }
[[ $rc -eq 42 ]] || fail "expected exit status 42 from inside, got $rc"
[[ "$(cat "$share/out.txt" 2>/dev/null)" == inside ]] || fail "write through the --share dir not visible outside"
echo "kvm-host selftest: PASS"
