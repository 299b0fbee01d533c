#!/bin/sh
# exit_paths.sh: leaves a program in the ways services do (test/exit_paths.c
# lists them) many times at 2 ranks; every run of every mode must exit 0.
# 50 runs of the two commonest ways out (a live group and a posted receive;
# a destroy from a NULL-base callback just before main returns), 10 of the
# others; EVMPI_EXIT_RUNS sets the runs of every mode. Open MPI passes the
# EVMPI_* variables on to the ranks it starts on this host.
set -u
status=0
for mode in live live-null deferred exit-in-cb app-mpi broken-live; do
  case $mode in
    live|deferred) runs=${EVMPI_EXIT_RUNS:-50} ;;
    *) runs=${EVMPI_EXIT_RUNS:-10} ;;
  esac
  # exit-in-cb: a teardown that can never run must not be waited for; with
  # a long exit wait, waiting for it would run into the 60 s limit.
  wait=
  [ "$mode" = exit-in-cb ] && wait=120000
  bad=0
  i=0
  while [ "$i" -lt "$runs" ]; do
    i=$((i + 1))
    if ! out=$(EVMPI_EXIT_WAIT_MS=${wait:-${EVMPI_EXIT_WAIT_MS:-}} EVMPI_TEST_NPROCS=2 \
               EVMPI_TEST_TIMEOUT=60 test/mpi-run.sh test/exit_paths "$mode" 2>&1); then
      bad=$((bad + 1))
      echo "FAIL: exit_paths $mode, run $i of $runs:"
      echo "$out" | tail -n 20
    fi
  done
  echo "exit_paths $mode: $((runs - bad)) of $runs runs exited 0"
  [ "$bad" = 0 ] || status=1
done

# After a group broke, MPI_Finalize at exit runs under a guard: with rank 1
# never finalizing (asleep for 60 s), rank 0 must end by itself within the
# exit wait (1 s here), with status 1 and the guard's line, and the job
# must end long before rank 1 would wake; without the guard rank 0 waits
# in MPI_Finalize for rank 1.
for i in 1 2 3; do
  start=$(date +%s)
  out=$(EVMPI_EXIT_WAIT_MS=1000 EVMPI_TEST_NPROCS=2 EVMPI_TEST_TIMEOUT=50 \
        test/mpi-run.sh test/exit_paths broken-peer-gone 2>&1)
  rc=$?
  took=$(($(date +%s) - start))
  if [ "$rc" = 0 ] || [ "$took" -ge 40 ] ||
     ! echo "$out" | grep -q "MPI_Finalize did not return within EVMPI_EXIT_WAIT_MS"; then
    echo "FAIL: exit_paths broken-peer-gone, run $i: status $rc after $took s (want nonzero, the guard's line, well under 40 s):"
    echo "$out" | tail -n 20
    status=1
  else
    echo "exit_paths broken-peer-gone, run $i: the guard ended rank 0; the job ended after $took s"
  fi
done
exit $status
