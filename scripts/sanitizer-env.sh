# Sourced by scripts/setup and scripts/test: the environment that runs an
# uninstrumented CPython with pyparallel built under ASan + UBSan.  The
# runtimes are preloaded so the extension's instrumented code finds them
# first; pymalloc is off so ASan sees every allocation.
san_env=()
if [[ -n ${PYPARALLEL_SANITIZE:-} ]]; then
  san_env=(LD_PRELOAD="$(cc -print-file-name=libasan.so):$(cc -print-file-name=libubsan.so)"
           ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
           PYTHONMALLOC=malloc)
fi
