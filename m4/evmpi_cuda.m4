dnl evmpi_cuda.m4: the optional CUDA toolkit.
dnl --with-cuda[=DIR] (default: look in /usr/local/cuda); --without-cuda
dnl turns it off. A toolkit that was asked for but is missing is an error;
dnl one that was only looked for is skipped with a notice.
dnl Sets CUDA_CPPFLAGS, CUDA_LDFLAGS, CUDA_LIBS, NVCC, HAVE_CUDA.
AC_DEFUN([EVMPI_FIND_CUDA], [
  AC_ARG_WITH([cuda],
    [AS_HELP_STRING([--with-cuda@<:@=DIR@:>@], [the CUDA toolkit (default: /usr/local/cuda when present)])],
    [], [with_cuda=check])
  evmpi_have_cuda=no
  evmpi_cuda_summary=no
  AS_CASE([$with_cuda],
    [no], [evmpi_cuda_summary="no (--without-cuda)"],
    [yes|check], [evmpi_cuda_dir=/usr/local/cuda],
    [evmpi_cuda_dir=$with_cuda])
  AS_IF([test "x$with_cuda" != xno], [
    CUDA_CPPFLAGS="-I$evmpi_cuda_dir/include"
    CUDA_LDFLAGS="-L$evmpi_cuda_dir/lib64 -Wl,-rpath,$evmpi_cuda_dir/lib64"
    evmpi_save_CPPFLAGS=$CPPFLAGS
    evmpi_save_LDFLAGS=$LDFLAGS
    evmpi_save_LIBS=$LIBS
    CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"
    LDFLAGS="$LDFLAGS $CUDA_LDFLAGS"
    AC_CHECK_HEADER([cuda_runtime.h],
      [AC_CHECK_LIB([cudart], [cudaGetDeviceCount], [evmpi_have_cuda=yes])])
    CPPFLAGS=$evmpi_save_CPPFLAGS
    LDFLAGS=$evmpi_save_LDFLAGS
    LIBS=$evmpi_save_LIBS
    AS_IF([test "x$evmpi_have_cuda" = xyes], [
      CUDA_LIBS=-lcudart
      AC_PATH_PROG([NVCC], [nvcc], [], [$evmpi_cuda_dir/bin:$PATH])
      evmpi_cuda_summary="yes ($evmpi_cuda_dir)"
    ], [
      CUDA_CPPFLAGS= ; CUDA_LDFLAGS=
      AS_IF([test "x$with_cuda" != xcheck],
        [AC_MSG_ERROR([CUDA was asked for but cuda_runtime.h or libcudart was not found in $evmpi_cuda_dir])])
      evmpi_cuda_summary="no (not found in $evmpi_cuda_dir)"
    ])
  ])
  AS_IF([test "x$evmpi_have_cuda" = xyes],
    [AC_DEFINE([EVMPI_HAVE_CUDA], [1], [Define to 1 when built with the CUDA runtime.])])
  AC_SUBST([CUDA_CPPFLAGS])
  AC_SUBST([CUDA_LDFLAGS])
  AC_SUBST([CUDA_LIBS])
  AM_CONDITIONAL([HAVE_CUDA], [test "x$evmpi_have_cuda" = xyes])
])
