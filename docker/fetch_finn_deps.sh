#!/usr/bin/env bash
# Build-time only (docker/Dockerfile, docker/hwkit.def): put finn-plus 1.6.1's external dependencies
# into $1 in the layout `finn deps update` produces (finn/interface/manage_deps.py), at the commits
# pinned in finn/interface/external_dependencies.yaml. The commits come from the environment (the
# Dockerfile's ARGs). A container never runs this: nothing is cloned at start-up.
set -euo pipefail
deps=${1:?usage: fetch_finn_deps.sh DEPS_DIR}
mkdir -p "$deps/board_files" "$deps/nlohmann_json"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

clone() {  # clone URL COMMIT DIR: a pinned checkout without history
  git init -q "$3"
  git -C "$3" remote add origin "$1"
  git -C "$3" fetch -q --depth 1 origin "$2"
  git -C "$3" checkout -q FETCH_HEAD
  rm -rf "$3/.git"
}

# git_deps (headers used by HLS code generation and the Aurora kernel)
clone https://github.com/Xilinx/finn-hlslib.git "$FINN_HLSLIB_COMMIT" "$deps/finn-hlslib"
clone https://github.com/iksnagreb/attention-hlslib.git "$ATTENTION_HLSLIB_COMMIT" "$deps/attention-hlslib"
clone https://github.com/pc2/AuroraFlow.git "$AURORAFLOW_COMMIT" "$deps/AuroraFlow"

# boardfile_deps: <repo>/<subdirectory> copied to board_files/<basename of subdirectory>
board() {  # board URL COMMIT SUBDIR
  local name; name=$(basename "$1" .git)-$2
  [ -d "$tmp/$name" ] || clone "$1" "$2" "$tmp/$name"
  if [ "$3" = . ]; then cp -r "$tmp/$name"/* "$deps/board_files/"; else cp -r "$tmp/$name/$3" "$deps/board_files/"; fi
}
board https://github.com/Avnet/bdf.git "$AVNET_BDF_COMMIT" .
board https://github.com/Xilinx/XilinxBoardStore.git "$XIL_BDF_COMMIT" boards/Xilinx/rfsoc2x2
board https://github.com/RealDigitalOrg/RFSoC4x2-BSP.git "$RFSOC4X2_BDF_COMMIT" board_files/rfsoc4x2
board https://github.com/Xilinx/XilinxBoardStore.git "$KV260_SOM_BDF_COMMIT" boards/Xilinx/kv260_som
board https://github.com/RealDigitalOrg/aup-zu3-bsp.git "$AUPZU3_8GB_BDF_COMMIT" board-files/aup-zu3-8gb

# direct_download_deps: the PYNQ-Z1/Z2 board files and nlohmann/json for finn-plus's simulator build
wget -q -O "$tmp/pynq-z1.zip" https://github.com/cathalmccabe/pynq-z1_board_files/raw/master/pynq-z1.zip
wget -q -O "$tmp/pynq-z2.zip" https://dpoauwgwqsy2x.cloudfront.net/Download/pynq-z2.zip
unzip -q -o "$tmp/pynq-z1.zip" -d "$deps/board_files"
unzip -q -o "$tmp/pynq-z2.zip" -d "$deps/board_files"
wget -q -O "$tmp/json.tar.xz" "https://github.com/nlohmann/json/releases/download/$NLOHMANN_JSON_VERSION/json.tar.xz"
tar -xJf "$tmp/json.tar.xz" -C "$deps/nlohmann_json"
test -f "$deps/nlohmann_json/json/CMakeLists.txt"
test -d "$deps/finn-hlslib" && test -d "$deps/board_files"
chmod -R a+rX "$deps"
echo "finn-plus dependencies in $deps: $(ls "$deps" | tr '\n' ' ')"
