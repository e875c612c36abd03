#!/usr/bin/env bash
# Installs libtensorflow for gotflow from the tensorflow-cpu wheel on PyPI.
#
#   scripts/install-libtensorflow.sh          # CPU build (tensorflow-cpu)
#   TF_VARIANT=gpu scripts/install-libtensorflow.sh   # CUDA build (tensorflow)
#
# Creates .venv (the project's Python environment), installs the pinned wheel
# and the packages in scripts/requirements.txt, lays out
# third_party/libtensorflow/{lib,include} and writes
# third_party/libtensorflow/env.sh. Idempotent: a second run with the same
# settings only re-checks the layout. The C API in libtensorflow_cc.so.2 has no
# Python dependency; the wheel is only a carrier.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tfdir="$root/third_party/libtensorflow"
venv="$root/.venv"
variant=${TF_VARIANT:-cpu}
python=${PYTHON:-python3}
# Versions tried in order; a later one is used only when the layout check of
# an earlier one fails (see third_party/libtensorflow/README.md).
versions=${TF_VERSIONS:-"2.21.0 2.18.0 2.15.0"}

log() { printf 'install-libtensorflow: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$variant" in
  cpu) wheel=tensorflow-cpu ;;
  gpu) wheel=tensorflow ;;
  *) die "TF_VARIANT must be cpu or gpu, got '$variant'" ;;
esac

stamp="$tfdir/.installed"
reqhash=$(sha256sum "$root/scripts/requirements.txt" "$0" | sha256sum | cut -c1-16)
if [[ -f "$stamp" && -f "$tfdir/env.sh" && -e "$tfdir/lib/libtensorflow.so" && -x "$venv/bin/python" ]] \
   && grep -qx "variant=$variant" "$stamp" && grep -qx "req=$reqhash" "$stamp"; then
  exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  "$python" -m venv "$venv" || die "could not create a venv with $python (is python3-venv installed?)"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

wheel_site() { "$venv/bin/python" -c 'import importlib.util,os,sys; s=importlib.util.find_spec("tensorflow"); print(os.path.dirname(s.origin) if s else "")' 2>/dev/null; }

# check_layout DIR: the C API symbols are defined, no Python symbol is needed.
check_layout() {
  local d=$1 cc=$1/libtensorflow_cc.so.2 fw=$1/libtensorflow_framework.so.2 sym
  [[ -f "$cc" && -f "$fw" ]] || { log "wheel has no libtensorflow_cc.so.2/libtensorflow_framework.so.2 in $d"; return 1; }
  local ccsyms fwsyms undef
  ccsyms=$(nm -D --defined-only "$cc") && fwsyms=$(nm -D --defined-only "$fw") \
    && undef=$(nm -D --undefined-only "$cc" "$fw") || { log "nm cannot read the libraries in $d (is binutils installed?)"; return 1; }
  for sym in TF_NewSession TF_NewServer TF_SessionRun TF_GraphImportGraphDef TF_LoadSessionFromSavedModel TF_Version; do
    grep -qE " T ${sym}(@|\$)" <<<"$ccsyms" || { log "$sym is not defined in $cc"; return 1; }
  done
  for sym in TF_AllocateTensor TF_NewStatus; do
    grep -qE " T ${sym}(@|\$)" <<<"$fwsyms" || { log "$sym is not defined in $fw"; return 1; }
  done
  if grep -qE ' U _?Py[A-Z_]' <<<"$undef"; then
    log "the libraries need Python symbols; they cannot be used from Go"; return 1
  fi
  [[ -f "$d/include/tensorflow/c/c_api.h" ]] || { log "no C headers in $d/include"; return 1; }
}

installed=""
for v in $versions; do
  have=$("$venv/bin/python" -m pip show "$wheel" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [[ "$have" != "$v" ]]; then
    log "installing $wheel==$v into .venv (this downloads the wheel once)"
    if ! "${pip[@]}" install "$wheel==$v"; then
      if [[ "$variant" == gpu ]]; then
        die "could not install $wheel==$v (the CUDA build); not falling back to the CPU build"
      fi
      log "$wheel==$v could not be installed; trying the next version"
      continue
    fi
  fi
  site=$(wheel_site)
  if [[ -n "$site" ]] && check_layout "$site"; then installed=$v; break; fi
  [[ "$variant" == gpu ]] && die "$wheel==$v does not have a usable C API layout"
  log "$wheel==$v failed the layout check; trying the next version"
done
[[ -n "$installed" ]] || die "no usable $wheel version among: $versions"

# Spark (gotflow_spark's tests and benchmark) needs a Java runtime: install
# one through apt only when there is none.
if ! command -v java >/dev/null 2>&1; then
  log "no java on PATH: installing openjdk-17-jre-headless for pyspark"
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q || die "apt-get update failed (needed to install a Java runtime for pyspark)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q openjdk-17-jre-headless \
    || die "could not install openjdk-17-jre-headless; install a Java 17+ runtime for pyspark"
fi

log "installing scripts/requirements.txt into .venv"
"${pip[@]}" install -r "$root/scripts/requirements.txt" || die "could not install scripts/requirements.txt"
# The TF Serving client stubs (the serving tests' reference client). Its
# metadata asks for the full tensorflow package, which tensorflow-cpu
# already provides: no dependencies.
# Same minor version as TensorFlow (patch releases differ: 2.15.0 has 2.15.1).
"${pip[@]}" install --no-deps "tensorflow-serving-api~=${installed%.*}.0" || die "could not install tensorflow-serving-api ${installed%.*}.x"

log "laying out $tfdir from $site"
rm -rf "$tfdir/lib" "$tfdir/include"
mkdir -p "$tfdir/lib" "$tfdir/include"
for f in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
  ln -s "$site/$f" "$tfdir/lib/$f"
done
ln -s libtensorflow_cc.so.2 "$tfdir/lib/libtensorflow.so"
ln -s libtensorflow_framework.so.2 "$tfdir/lib/libtensorflow_framework.so"
inc="$site/include"
copy_tree() { # copy_tree SRC_SUBDIR (relative to the wheel's include/)
  [[ -e "$inc/$1" ]] || return 0
  mkdir -p "$tfdir/include/$(dirname "$1")"
  cp -R "$inc/$1" "$tfdir/include/$1"
}
copy_tree tensorflow/c
copy_tree xla/tsl/c
mkdir -p "$tfdir/include/tensorflow/core/platform" "$tfdir/include/tsl/platform"
cp "$inc"/tensorflow/core/platform/ctstring*.h "$tfdir/include/tensorflow/core/platform/" 2>/dev/null || true
cp "$inc"/tsl/platform/ctstring*.h "$tfdir/include/tsl/platform/" 2>/dev/null || true

cat > "$tfdir/env.sh" <<ENV
# Generated by scripts/install-libtensorflow.sh: source it to build gotflow
# outside make, e.g. 'source third_party/libtensorflow/env.sh && go test ./...'.
export GOTFLOW_TF_DIR="$tfdir"
export GOTFLOW_PYTHON="$venv/bin/python"
export CGO_ENABLED=1
export CGO_CFLAGS="-I$tfdir/include"
export CGO_LDFLAGS="-L$tfdir/lib -ltensorflow_framework -Wl,-rpath,$tfdir/lib"
export LD_LIBRARY_PATH="$tfdir/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV

# Smoke test: a C program that calls TF_Version() links and runs.
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
cat > "$smoke/v.c" <<'C'
#include <stdio.h>
#include "tensorflow/c/c_api.h"
int main(void) { printf("%s\n", TF_Version()); return 0; }
C
cc -I"$tfdir/include" "$smoke/v.c" -o "$smoke/v" -L"$tfdir/lib" -ltensorflow -ltensorflow_framework -Wl,-rpath,"$tfdir/lib" \
  || die "a C program calling TF_Version() does not link against $tfdir/lib"
got=$("$smoke/v") || die "a C program calling TF_Version() does not run"
[[ "$got" == "$installed" ]] || log "warning: TF_Version() says $got, the wheel says $installed"

printf 'variant=%s\nversion=%s\nreq=%s\n' "$variant" "$got" "$reqhash" > "$stamp"
log "libtensorflow $got ($variant) ready in $tfdir"
