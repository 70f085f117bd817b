#!/usr/bin/env bash
# Entry point of the hwkit image (run under tini, or `docker run --init`). It sources the mounted
# Vivado/Vitis install and then runs the command. It never clones or installs anything.
#
#   HWKIT_XILINX_PATH     Xilinx root mounted read-only at its host path (FINN_XILINX_PATH also works)
#   HWKIT_XILINX_VERSION  e.g. 2024.2 (default: the newest version found under the root)
#   XILINXD_LICENSE_FILE  license file or port@host (not needed for WebPACK/Standard parts)
#   HWKIT_LIBUDEV         libudev preloaded for FlexLM (default /lib/x86_64-linux-gnu/libudev.so.1)
# Without HWKIT_XILINX_PATH the estimate-only flows still work; `--bitstream` then says what is missing.
set -eo pipefail

root=${HWKIT_XILINX_PATH:-${FINN_XILINX_PATH:-}}
version=${HWKIT_XILINX_VERSION:-${FINN_XILINX_VERSION:-}}

# Running as the caller's uid, which has no entry in the image's /etc/passwd: give it a writable HOME.
if [ -z "${HOME:-}" ] || [ "$HOME" = / ] || ! [ -w "$HOME" ]; then
  export HOME=${TMPDIR:-/tmp}/hwkit-home-$(id -u)
  mkdir -p "$HOME"
fi

if [ -n "$root" ]; then
  if [ ! -d "$root" ]; then
    echo "hwkit-entrypoint: error: HWKIT_XILINX_PATH=$root is not mounted (add -v $root:$root:ro)" >&2
    exit 2
  fi
  if [ -z "$version" ]; then  # newest version in either layout
    version=$(cd "$root" && ls -d Vivado/20*.* 20*.*/Vivado 2>/dev/null | grep -o '20[0-9][0-9]\.[0-9]' | sort -V | tail -n 1 || true)
  fi
  # Before 2025.1: <root>/Vivado/<ver>, <root>/Vitis_HLS/<ver>; from 2025.1: <root>/<ver>/Vivado, HLS in <root>/<ver>/Vitis.
  sourced=0
  for settings in "$root/Vivado/$version/settings64.sh" "$root/$version/Vivado/settings64.sh" \
                  "$root/Vitis_HLS/$version/settings64.sh" "$root/Vitis/$version/settings64.sh" \
                  "$root/$version/Vitis/settings64.sh"; do
    if [ -n "$version" ] && [ -f "$settings" ]; then
      # shellcheck disable=SC1090
      source "$settings" >/dev/null
      sourced=1
    fi
  done
  if [ "$sourced" = 0 ] || [ -z "${XILINX_VIVADO:-}" ]; then
    echo "hwkit-entrypoint: error: no Vivado ${version:-<any version>} settings64.sh under $root (looked for" \
         "Vivado/<ver>/ and <ver>/Vivado/)" >&2
    exit 2
  fi
  # finn-plus's XSI simulator links against Vivado's libraries (finn-plus#112).
  export LD_LIBRARY_PATH="$XILINX_VIVADO/lib/lnx64.o${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # FlexLM in containers: preload the system libudev (the FINN Docker flow does the same).
  udev=${HWKIT_LIBUDEV:-/lib/x86_64-linux-gnu/libudev.so.1}
  if [ -e "$udev" ]; then
    export LD_PRELOAD="$udev${LD_PRELOAD:+:$LD_PRELOAD}"
  fi
  export XILINX_LOCAL_USER_DATA=no
else
  echo "hwkit-entrypoint: no HWKIT_XILINX_PATH: Vivado is not available (estimate-only flows work)" >&2
fi

if [ $# -eq 0 ]; then
  set -- hwkit --help
fi
exec "$@"
