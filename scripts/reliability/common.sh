# common.sh: sourced by the scripts in scripts/reliability/. Not run on its own.
#   ROOT       repository root
#   REL_BUILD  where the reliability builds go (env GQA_REL_BUILD, default /tmp/gqa-reliability)
#   REL_JOBS   parallel build jobs (env GQA_REL_JOBS, default 2)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REL_BUILD="${GQA_REL_BUILD:-${TMPDIR:-/tmp}/gqa-reliability}"
REL_JOBS="${GQA_REL_JOBS:-2}"
mkdir -p "$REL_BUILD"

rel_log() { printf '[reliability %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Install the tools a script needs (Debian packages), once per machine. Root or sudo required
# only when something is missing.
rel_need() {
  local missing=() pkg tool
  for pair in "$@"; do # "tool:package"
    tool=${pair%%:*}
    pkg=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} = 0 ] && return 0
  rel_log "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ ! -e "$REL_BUILD/.apt-updated" ]; then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null && touch "$REL_BUILD/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Configure the top-level project (which adds tests/c and tests/reliability under
# GQA_BUILD_TESTS) into build dir $1, CPU only, with extra cmake arguments.
rel_configure() {
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$dir" -DGQA_ENABLE_CUDA=OFF -DGQA_BUILD_TESTS=ON "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
}
