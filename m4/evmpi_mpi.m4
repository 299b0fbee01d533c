dnl evmpi_mpi.m4: find the MPI library and its launcher.
dnl Sets MPI_CFLAGS, MPI_LIBS, MPI_PC_NAME (for evmpi.pc's Requires) and
dnl MPIRUN. Open MPI is found through ompi-c.pc, MPICH through mpich.pc;
dnl --with-mpi=DIR adds DIR/lib/pkgconfig and DIR/bin to the search.
AC_DEFUN([EVMPI_FIND_MPI], [
  AC_ARG_WITH([mpi],
    [AS_HELP_STRING([--with-mpi=DIR], [where the MPI library is installed])],
    [], [with_mpi=check])
  evmpi_mpi_path=$PATH
  AS_IF([test "x$with_mpi" != xcheck && test "x$with_mpi" != xyes], [
    PKG_CONFIG_PATH="$with_mpi/lib/pkgconfig:$with_mpi/lib64/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export PKG_CONFIG_PATH
    evmpi_mpi_path="$with_mpi/bin:$PATH"
  ])
  MPI_PC_NAME=
  PKG_CHECK_MODULES([MPI], [ompi-c], [MPI_PC_NAME=ompi-c], [
    PKG_CHECK_MODULES([MPI], [mpich], [MPI_PC_NAME=mpich], [
      AC_MSG_ERROR([no MPI found (pkg-config ompi-c or mpich): install the Debian packages libopenmpi-dev and openmpi-bin])])])
  AC_SUBST([MPI_PC_NAME])
  AC_PATH_PROGS([MPIRUN], [mpirun mpiexec], [], [$evmpi_mpi_path])
  AS_IF([test -z "$MPIRUN"],
    [AC_MSG_ERROR([mpirun not found: install the Debian package openmpi-bin])])
  evmpi_save_CPPFLAGS=$CPPFLAGS
  CPPFLAGS="$CPPFLAGS $MPI_CFLAGS"
  AC_CHECK_HEADER([mpi.h], [],
    [AC_MSG_ERROR([mpi.h not usable with $MPI_CFLAGS: install the Debian package libopenmpi-dev])])
  CPPFLAGS=$evmpi_save_CPPFLAGS
])
