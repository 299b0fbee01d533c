dnl evmpi_mpi.m4: find the MPI library and its launcher.
dnl Sets MPI_CFLAGS, MPI_LIBS, MPI_PC_NAME (for evmpi.pc's Requires),
dnl MPI_FLAVOR (openmpi or mpich), MPI_VERSION_TEXT and MPIRUN.
dnl   --with-mpi=openmpi   Open MPI (pkg-config ompi-c), its launcher
dnl   --with-mpi=mpich     MPICH or a derivative (pkg-config mpich)
dnl   --with-mpi=DIR       whichever of them is installed under DIR
dnl   (default)            the one installed; Open MPI when both are, said so
dnl Debian installs both side by side with suffixed launchers
dnl (mpirun.openmpi, mpiexec.mpich); those are preferred over the plain
dnl names, which the alternatives system points at one of them.
AC_DEFUN([EVMPI_FIND_MPI], [
  AC_ARG_WITH([mpi],
    [AS_HELP_STRING([--with-mpi=openmpi|mpich|DIR],
      [the MPI to build against (default: the one installed, Open MPI if both are)])],
    [], [with_mpi=check])
  evmpi_mpi_path=$PATH
  evmpi_want=
  case $with_mpi in
    check|yes) ;;
    openmpi|ompi) evmpi_want=openmpi ;;
    mpich) evmpi_want=mpich ;;
    no) AC_MSG_ERROR([evmpi needs MPI: --without-mpi is not an option]) ;;
    *)
      PKG_CONFIG_PATH="$with_mpi/lib/pkgconfig:$with_mpi/lib64/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
      export PKG_CONFIG_PATH
      evmpi_mpi_path="$with_mpi/bin:$PATH"
      ;;
  esac
  evmpi_have_ompi=no
  evmpi_have_mpich=no
  PKG_CHECK_EXISTS([ompi-c], [evmpi_have_ompi=yes])
  PKG_CHECK_EXISTS([mpich], [evmpi_have_mpich=yes])
  AS_IF([test -z "$evmpi_want"], [
    AS_IF([test $evmpi_have_ompi = yes], [evmpi_want=openmpi],
          [test $evmpi_have_mpich = yes], [evmpi_want=mpich],
          [AC_MSG_ERROR([no MPI found (pkg-config ompi-c or mpich): install the Debian packages libopenmpi-dev and openmpi-bin, or libmpich-dev and mpich])])
    AS_IF([test $evmpi_have_ompi = yes && test $evmpi_have_mpich = yes],
      [AC_MSG_NOTICE([both Open MPI and MPICH are installed: using Open MPI (--with-mpi=mpich picks MPICH)])])
  ])
  AS_CASE([$evmpi_want],
    [openmpi], [MPI_PC_NAME=ompi-c
                MPI_FLAVOR=openmpi
                evmpi_launchers="mpirun.openmpi mpiexec.openmpi mpirun mpiexec"
                evmpi_hint="libopenmpi-dev and openmpi-bin"],
    [mpich],   [MPI_PC_NAME=mpich
                MPI_FLAVOR=mpich
                evmpi_launchers="mpiexec.mpich mpirun.mpich mpiexec.hydra mpiexec mpirun"
                evmpi_hint="libmpich-dev and mpich"])
  PKG_CHECK_MODULES([MPI], [$MPI_PC_NAME], [],
    [AC_MSG_ERROR([$evmpi_want not found (pkg-config $MPI_PC_NAME): install the Debian packages $evmpi_hint])])
  MPI_VERSION_TEXT=`$PKG_CONFIG --modversion $MPI_PC_NAME 2>/dev/null`
  AC_SUBST([MPI_PC_NAME])
  AC_SUBST([MPI_FLAVOR])
  AC_SUBST([MPI_VERSION_TEXT])
  AC_ARG_VAR([MPIRUN], [the MPI launcher for make check and make bench])
  AC_PATH_PROGS([MPIRUN], [$evmpi_launchers], [], [$evmpi_mpi_path])
  AS_IF([test -z "$MPIRUN"],
    [AC_MSG_ERROR([no launcher for $evmpi_want ($evmpi_launchers) found: install the Debian packages $evmpi_hint])])
  dnl A plain mpirun may belong to the other MPI (the alternatives decide).
  AS_CASE([$MPIRUN],
    [*.openmpi|*.mpich|*.hydra], [],
    [evmpi_launcher_text=`"$MPIRUN" --version 2>&1`
     AS_CASE([$evmpi_want:$evmpi_launcher_text],
       [openmpi:*"Open MPI"*|openmpi:*OpenRTE*], [],
       [mpich:*HYDRA*|mpich:*Hydra*|mpich:*MPICH*], [],
       [AC_MSG_ERROR([$MPIRUN is not $evmpi_want's launcher; set MPIRUN=/path/to/it])])])
  evmpi_save_CPPFLAGS=$CPPFLAGS
  CPPFLAGS="$CPPFLAGS $MPI_CFLAGS"
  AC_CHECK_HEADER([mpi.h], [],
    [AC_MSG_ERROR([mpi.h not usable with $MPI_CFLAGS: install the Debian packages $evmpi_hint])])
  dnl Whether the MPI was built CUDA-aware, as far as its headers say (the
  dnl library is asked again at run time: evmpi_pg_cuda_path).
  evmpi_mpi_cuda=no
  AS_CASE([$evmpi_want],
    [openmpi], [AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>
#include <mpi-ext.h>]], [[#if !defined(MPIX_CUDA_AWARE_SUPPORT) || !MPIX_CUDA_AWARE_SUPPORT
#error not CUDA-aware
#endif]])], [evmpi_mpi_cuda=yes])],
    [mpich], [AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]],
      [[#ifndef MPIX_GPU_SUPPORT_CUDA
#error no GPU query
#endif
int x = MPIX_GPU_SUPPORT_CUDA; (void)x;]])],
      [evmpi_mpi_cuda="asked at run time (MPIX_GPU_query_support)"])])
  CPPFLAGS=$evmpi_save_CPPFLAGS
  MPI_CUDA_SUMMARY=$evmpi_mpi_cuda
])
