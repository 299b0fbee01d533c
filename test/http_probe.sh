#!/bin/sh
# http_probe.sh: drives examples/http_service with real HTTP requests. For
# each size in EVMPI_HTTP_TEST_NPROCS (default "2 3"), starts the service
# under mpirun (through test/mpi-run.sh) in the background on a free
# loopback port, reads the port from its first line, runs the checks of
# test/test_http_probe (which ends with /quit), then requires every rank to
# have exited 0. Everything is bounded in time: the service by
# EVMPI_TEST_TIMEOUT (mpi-run.sh), the probe by `timeout`.
# Run by make check from the build directory.
set -u
EVMPI_TEST_TIMEOUT=${EVMPI_HTTP_TEST_TIMEOUT:-60}
export EVMPI_TEST_TIMEOUT
status=0
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

for np in ${EVMPI_HTTP_TEST_NPROCS:-2 3}; do
  echo "== examples/http_service at $np rank(s)"
  out=$tmp/service-$np.out
  EVMPI_TEST_NPROCS=$np test/mpi-run.sh examples/http_service 0 >"$out" 2>&1 &
  pid=$!

  # Wait up to 30 s for "listening on 127.0.0.1:PORT".
  port=
  i=0
  while [ $i -lt 300 ]; do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done

  ok=yes
  if [ -z "$port" ]; then
    echo "FAIL: the service did not print its port"
    ok=no
  elif ! timeout 60 test/test_http_probe "$port" "$np"; then
    echo "FAIL: the probe failed at $np rank(s)"
    ok=no
  fi

  # The probe sent /quit: every rank should now leave. Give it 15 s, then
  # stop mpirun (mpi-run.sh's children: timeout, which passes the signal on).
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "FAIL: the service is still running 15 s after /quit; stopping it"
    pkill -TERM -P "$pid" 2>/dev/null
    ok=no
  fi
  if ! wait "$pid"; then
    echo "FAIL: mpirun of examples/http_service exited non-zero at $np rank(s)"
    ok=no
  fi
  echo "-- output of examples/http_service at $np rank(s):"
  cat "$out"
  if [ $ok != yes ]; then
    status=1
  fi
done
exit $status
