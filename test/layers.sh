#!/bin/sh
# layers.sh: lib/ calls one way. From the library's object files (nm: what
# each defines, what each uses) it builds the file-level call graph, a
# file calling another when it uses a symbol the other defines, and fails
# when the graph has a cycle (tsort finds it and names the files), or when
# a source file includes another module's private header wholesale (the
# old lib/evmpi-internal.h). On success it prints the files bottom-up.
# Run by make check from the build directory.
set -u
srcdir=${srcdir:-.}
objs=$(ls lib/.libs/libevmpi_la-*.o 2>/dev/null || ls lib/libevmpi_la-*.o 2>/dev/null)
if [ -z "$objs" ]; then
  echo "FAIL: no object files of libevmpi under lib/ (build first)"
  exit 1
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
for o in $objs; do
  f=$(basename "$o" .o)
  f=${f#libevmpi_la-}
  nm "$o" | awk -v f="$f" '$2 ~ /^[TDBR]$/ { print $3, f > "'"$tmp"'/defs" }
                            $1 == "U" { print f, $2 > "'"$tmp"'/uses" }'
  cat "$tmp/defs" >>"$tmp/alldefs" 2>/dev/null
  cat "$tmp/uses" >>"$tmp/alluses" 2>/dev/null
  rm -f "$tmp/defs" "$tmp/uses"
  echo "$f $f" >>"$tmp/edges" # every file appears, called or not
done
# file symbol + symbol definer -> "definer file" edges (tsort: a before b)
awk 'NR == FNR { def[$1] = $2; next }
     ($2 in def) && def[$2] != $1 { print def[$2], $1 }' "$tmp/alldefs" "$tmp/alluses" |
  sort -u >>"$tmp/edges"
if ! tsort "$tmp/edges" >"$tmp/order" 2>"$tmp/err"; then
  echo "FAIL: the call graph of lib/ has a cycle:"
  cat "$tmp/err"
  exit 1
fi
status=0
for c in "$srcdir"/lib/*.c; do
  if grep -q '#include "evmpi-internal.h"' "$c"; then
    echo "FAIL: $c includes evmpi-internal.h (each module has its own header)"
    status=1
  fi
done
[ $status = 0 ] || exit 1
echo "PASS: lib/'s call graph has no cycle; its files, each calling only files before it:"
tr '\n' ' ' <"$tmp/order"
echo
