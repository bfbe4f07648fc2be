#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the repository for FUZZTIME each
# (default 1s): `go test -fuzz` takes one target of one package per run,
# so this finds the targets (func FuzzX in *_test.go) and runs them one by
# one. Arguments, if any, are regular expressions: only the targets whose
# "package:FuzzX" matches one of them run.
#
#   FUZZTIME=1s FUZZJOBS=3 FUZZPARALLEL=1 bash scripts/fuzz.sh   # `make test`
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

# FUZZJOBS targets run at once, each with FUZZPARALLEL workers (go test's
# -parallel; default GOMAXPROCS). For short runs most of a target's time
# is start-up (build cache, worker processes, the cached corpus), so
# `make test` runs several at once with one worker each.
FUZZJOBS=${FUZZJOBS:-1}
FUZZPARALLEL=${FUZZPARALLEL:-}

selected=()
for t in "${targets[@]}"; do
  if (($#)); then
    match=0
    for re in "$@"; do [[ $t =~ $re ]] && match=1; done
    ((match)) || continue
  fi
  selected+=("$t")
done
if ((${#selected[@]} == 0)); then
  echo "fuzz: no target matched $*"
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

run_one() { # index target
  local i=$1 t=$2 pkg=${2%%:*} name=${2##*:} t0=$SECONDS rc=0
  $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINTIME" \
    ${FUZZPARALLEL:+-parallel "$FUZZPARALLEL"} "$pkg" >"$tmp/$i.out" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >"$tmp/$i.rc"
}

for i in "${!selected[@]}"; do
  while (($(jobs -rp | wc -l) >= FUZZJOBS)); do wait -n || true; done
  run_one "$i" "${selected[$i]}" &
done
wait

failed=()
for i in "${!selected[@]}"; do
  t=${selected[$i]}
  read -r rc secs <"$tmp/$i.rc"
  if ((rc == 0)); then
    echo "fuzz: ok   $t (${secs}s)"
  else
    echo "fuzz: FAIL $t (${secs}s)"
    grep -v '^fuzz: elapsed' "$tmp/$i.out" | sed 's/^/    /'
    failed+=("$t")
  fi
done
echo "fuzz: ${#selected[@]} targets, ${FUZZTIME} each, ${FUZZJOBS} at a time, $((SECONDS - start))s"
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}"
  exit 1
fi
