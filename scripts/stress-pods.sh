#!/usr/bin/env bash
# The stress loop of the agent connection: N rounds of pod end-to-end cases (default the
# load of pod-e2e's two-containers and oom cases: pods that log, exec, are OOM-killed and stop),
# one attempt each, in real microVMs (inside the emulated KVM test host where needed). Prints
# each failure with its signature (FLAKY: a known emulation failure, UNCLASSIFIED: ours), then
# the counts. Not part of CI (it takes about 25 s per pod in the test host).
#   scripts/stress-pods.sh [ROUNDS=50] [CASES=two-containers,oom]
# Files of failed runs stay in target/pod-e2e/<case>.round<N>/. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-50}"
cases="${2:-two-containers,oom}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "stress-pods: ROUNDS must be a positive number" >&2; exit 2; }
ncases=$(($(tr -cd , <<<"$cases" | wc -c) + 1))
export PEAPOD_E2E_ONLY="$cases" PEAPOD_E2E_REPEAT="$rounds"
# The VMMs log every connection they open, close or reset (their vmm.log).
export PEAPOD_VMM_LOG="${PEAPOD_VMM_LOG:-debug}"
# About 60 s per pod at worst in the test host, plus its boot.
export PEAPOD_E2E_TIMEOUT=$((rounds * ncases * 60 + 300))
export PEAPOD_KVM_HOST_TIMEOUT=$((PEAPOD_E2E_TIMEOUT + 600))
echo "stress-pods: $rounds rounds of $cases ($((rounds * ncases)) pods), started $(date +%H:%M:%S)" >&2
status=0
./tests/pod-e2e/run.sh || status=$?
echo "stress-pods: finished $(date +%H:%M:%S), exit status $status" >&2
exit "$status"
