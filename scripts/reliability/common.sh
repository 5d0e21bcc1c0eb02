# common.sh: sourced by the scripts in scripts/reliability/. Not run on its own.
#   ROOT       repository root
#   REL_BUILD  where the reliability builds go (env GQA_REL_BUILD, default build/reliability in
#              this checkout: a build tree made from another checkout would be refused by CMake)
#   REL_JOBS   parallel build jobs (env GQA_REL_JOBS, default 2)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REL_BUILD="${GQA_REL_BUILD:-$ROOT/build/reliability}"
REL_JOBS="${GQA_REL_JOBS:-2}"
mkdir -p "$REL_BUILD"

rel_log() { printf '[reliability %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# apt-get install, after one apt-get update per build root. Root or sudo needed.
rel_apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  rel_log "installing: $*"
  if [ ! -e "$REL_BUILD/.apt-updated" ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null && touch "$REL_BUILD/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Install the Debian packages of the tools a script needs, when missing: "tool:package" ...
rel_need() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} = 0 ] || rel_apt_install "${missing[@]}"
}

# clang's sanitizer and libFuzzer runtimes (libclang-rt-dev, only "recommended" by clang).
rel_need_clang_rt() {
  rel_need clang:clang || return 1
  [ -f "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)" ] || rel_apt_install libclang-rt-dev
}

# Configure the top-level project (which adds tests/c and tests/reliability under
# GQA_BUILD_TESTS) into build dir $1, CPU only, with extra cmake arguments.
rel_configure() {
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$dir" -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=ON "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
}
