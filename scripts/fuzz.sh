#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the repository for FUZZTIME each
# (default 1s): `go test -fuzz` takes one target of one package per run,
# so this finds the targets (func FuzzX in *_test.go) and runs them one by
# one. Arguments, if any, are regular expressions: only the targets whose
# "package:FuzzX" matches one of them run.
#
#   FUZZTIME=1s  bash scripts/fuzz.sh            # what `make test` does
#   FUZZTIME=10m bash scripts/fuzz.sh            # `make fuzz FUZZTIME=10m`
#   FUZZTIME=1m  bash scripts/fuzz.sh Gossip ^./vod:
#
# A failing input is written to the package's testdata/fuzz/FuzzX/ by go
# test; commit it with the fix, so that every later `go test` replays it.
# Every target is run even after a failure; the script fails at the end if
# any did, and lists them.
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1s}
# Minimizing a new interesting input can take up to a minute by default:
# keep it short, the fuzzing budget is for finding inputs.
MINTIME=${FUZZMINIMIZETIME:-2s}

targets=()
while IFS=: read -r file line; do
  name=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
  targets+=("./$(dirname "$file"):$name")
done < <(grep -rE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . | sed 's|^\./||' | sort)

failed=()
ran=0
start=$SECONDS
for t in "${targets[@]}"; do
  if (($#)); then
    match=0
    for re in "$@"; do [[ $t =~ $re ]] && match=1; done
    ((match)) || continue
  fi
  pkg=${t%%:*} name=${t##*:}
  t0=$SECONDS
  if out=$($GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINTIME" "$pkg" 2>&1); then
    echo "fuzz: ok   $t ($((SECONDS - t0))s)"
  else
    echo "fuzz: FAIL $t ($((SECONDS - t0))s)"
    echo "$out" | grep -v '^fuzz: elapsed' | sed 's/^/    /'
    failed+=("$t")
  fi
  ran=$((ran + 1))
done
echo "fuzz: $ran targets, ${FUZZTIME} each, $((SECONDS - start))s"
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}"
  exit 1
fi
if ((ran == 0)); then
  echo "fuzz: no target matched $*"
  exit 1
fi
