#!/bin/sh
# faults.sh: a rank killed with SIGKILL in the middle of a run, and
# evmpi_pg_abort, must end the job by themselves (mpirun tears it down, or
# the group timeout fires), with a failure status, well before the time
# limit; a process that exits while a broken group's worker is still in
# MPI ends cleanly. Run by make check from the build directory.
set -u
limit=${EVMPI_FAULT_TIMEOUT:-120}
status=0
if [ "$(id -u)" = 0 ]; then
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

check() { # name np expected-text
  name=$1 np=$2 want=$3
  start=$(date +%s)
  EVMPI_TEST_NPROCS=$np EVMPI_TEST_TIMEOUT=$limit test/mpi-run.sh test/fault_main "$name" >"$tmp/$name.out" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  cat "$tmp/$name.out"
  if [ $rc = 0 ]; then
    echo "FAIL: $name at $np ranks: the job exited 0"; status=1
  elif grep -q "^FAIL: .*timeout\|Terminated" "$tmp/$name.out" || [ $took -ge "$limit" ]; then
    echo "FAIL: $name at $np ranks: the job hung until the $limit s limit"; status=1
  elif ! grep -q "$want" "$tmp/$name.out"; then
    echo "FAIL: $name at $np ranks: no \"$want\" in the output"; status=1
  else
    echo "ok: $name at $np ranks ended by itself in ${took} s"
  fi
}

check kill 3 "rank 1: SIGKILL after 50 allreduces"
check kill 2 "rank 1: SIGKILL after 50 allreduces"
check abort 3 "calling evmpi_pg_abort"
if grep -q "evmpi_pg_abort returned" "$tmp/abort.out"; then
  echo "FAIL: evmpi_pg_abort returned"; status=1
fi
# A broken group's worker still inside MPI when the process exits: the exit
# waits for it to come out, then finalises; the job succeeds.
for np in 2 3; do
  EVMPI_TEST_NPROCS=$np EVMPI_TEST_TIMEOUT=$limit test/mpi-run.sh test/fault_main exit \
    >"$tmp/exit.out" 2>&1
  rc=$?
  cat "$tmp/exit.out"
  if [ $rc != 0 ] || ! grep -q "allreduce timed out; destroying" "$tmp/exit.out"; then
    echo "FAIL: exit at $np ranks: status $rc"; status=1
  else
    echo "ok: exit at $np ranks with a broken group's worker in MPI: status 0"
  fi
done
[ $status = 0 ] && echo "faults: every job ended by itself, as expected"
exit $status
