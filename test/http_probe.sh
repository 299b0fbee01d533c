#!/bin/sh
# http_probe.sh: drives examples/http_service with real HTTP requests. For
# each size in EVMPI_HTTP_TEST_NPROCS (default "2 3"), starts the service
# under mpirun (through test/mpi-run.sh) in the background on a free
# loopback port, reads the port from its first line, runs the checks of
# test/test_http_probe (which ends with /quit), then requires every rank to
# have exited 0. Everything is bounded in time: the service by
# EVMPI_TEST_TIMEOUT (mpi-run.sh), the probe by `timeout`. The service's
# output is kept in test/http_service-npN.out (and copied into this
# script's log) so that a failure can be read afterwards.
# Run by make check from the build directory.
set -u
EVMPI_TEST_TIMEOUT=${EVMPI_HTTP_TEST_TIMEOUT:-120}
export EVMPI_TEST_TIMEOUT
status=0

for np in ${EVMPI_HTTP_TEST_NPROCS:-2 3}; do
  echo "== examples/http_service at $np rank(s)"
  out=test/http_service-np$np.out
  rm -f "$out"
  EVMPI_TEST_NPROCS=$np test/mpi-run.sh examples/http_service 0 >"$out" 2>&1 &
  pid=$!

  # Wait up to 60 s for "listening on 127.0.0.1:PORT" (starting MPI on a
  # loaded machine can be slow).
  port=
  i=0
  while [ $i -lt 600 ]; do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$out" 2>/dev/null)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done

  ok=yes
  if [ -z "$port" ]; then
    echo "FAIL: the service did not print its port"
    ok=no
  elif ! timeout 120 test/test_http_probe "$port" "$np"; then
    echo "FAIL: the probe failed at $np rank(s)"
    ok=no
  fi

  # The probe sent /quit: every rank should now leave. Give it 30 s, then
  # stop mpirun (mpi-run.sh's children: timeout, which passes the signal on).
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "FAIL: the service is still running 30 s after /quit; stopping it"
    pkill -TERM -P "$pid" 2>/dev/null
    ok=no
  fi
  if ! wait "$pid"; then
    echo "FAIL: mpirun of examples/http_service exited non-zero at $np rank(s)"
    ok=no
  fi
  echo "-- output of examples/http_service at $np rank(s) ($out):"
  cat "$out"
  if [ $ok != yes ]; then
    status=1
  fi
done
exit $status
