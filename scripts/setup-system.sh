#!/usr/bin/env bash
# System libraries loadlens uses on Linux, installed once (idempotent).
# - libopenblas0-pthread: a runtime-dispatching OpenBLAS that MLX's CPU backend can use
#   instead of the slow reference BLAS bundled in the mlx wheel (see workloads/stack/blas.py).
# Without root or apt, it says what to install and carries on: loadlens then reports the
# slow BLAS as a finding and the `openblas` configuration is refused with a clear message.
set -u
[ "$(uname -s)" = "Linux" ] || exit 0
want=()
ls /usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0 >/dev/null 2>&1 || want+=(libopenblas0-pthread)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: loadlens would like these system packages: ${want[*]} (apt-get install them as root)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "${want[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want[@]}" >/dev/null; } \
  || echo "note: could not install ${want[*]}; MLX keeps its bundled reference BLAS" >&2
exit 0
