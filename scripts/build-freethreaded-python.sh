#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 (3.13t, `--disable-gil`) from Debian's source
# package python3.13 (trixie) and install it into a cache directory; print the
# interpreter's path as the last line of stdout (everything else goes to stderr).
#
#   scripts/build-freethreaded-python.sh            # build, or reuse the cache
#   py=$(scripts/build-freethreaded-python.sh)      # ... and keep the path
#   TLALLOC_FT_PREFIX=/opt/py313t scripts/build-freethreaded-python.sh
#
# The source comes through `apt-get source --download-only` with a private source
# list (a deb-src line for trixie's main component on the Debian archive this
# machine's apt already uses) and private state/cache directories: the system's
# apt configuration and package lists are not touched. Only the upstream tarball
# (python3.13_*.orig.tar.xz) is used: `./configure --disable-gil --prefix=CACHE`,
# `make -j2`, `make install` (33 minutes on a busy 2-core machine). Missing build
# dependencies (headers) are installed with apt-get when run as root.
#
# Environment:
#   TLALLOC_FT_PREFIX     install prefix, the cache (default ~/.cache/tlalloc/cpython-3.13t)
#   TLALLOC_FT_MIRROR     Debian archive URI (default: read from /etc/apt sources)
#   TLALLOC_FT_JOBS       make -j (default 2)
set -euo pipefail

prefix=${TLALLOC_FT_PREFIX:-${HOME:-/root}/.cache/tlalloc/cpython-3.13t}
jobs=${TLALLOC_FT_JOBS:-2}
suite=trixie
python=$prefix/bin/python3.13t

log() { printf 'build-freethreaded-python: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A cached interpreter is reused when the build finished (marker written last) and
# it runs, is free-threaded, and has the modules the test suite needs.
works() {
    [ -f "$prefix/.tlalloc-build-complete" ] && [ -x "$python" ] &&
        "$python" -c '
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a free-threaded build"
assert sys.version_info[:2] == (3, 13), sys.version
import ctypes, ssl, sqlite3, zlib, lzma, bz2, venv, ensurepip  # noqa: F401
' >&2
}

mkdir -p "$(dirname "$prefix")"
# One build at a time per prefix (CI and a developer may start it together).
exec 9>"$prefix.lock"
flock 9

if works; then
    log "reusing the cached interpreter in $prefix"
    echo "$python"
    exit 0
fi

# --- The Debian archive URI this machine's apt uses -------------------------------
# One-line format (sources.list, *.list): "deb [options] URI SUITE COMPONENTS...".
# deb822 (*.sources): stanzas with Types:, URIs:, Suites:, Signed-By:.
# The main archive is the entry with a plain codename suite that is not a security
# archive; its URI serves trixie too.
find_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '
            /^[ \t]*deb(-src)?[ \t]/ {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                uri = $i; s = $(i + 1)
                if (uri ~ /^https?:/ && uri !~ /security/ && s !~ /[-\/]/) { print uri; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /deb/ && enabled !~ /^[Nn]o/) {
                    n = split(uris, u, /[ \t]+/); m = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++)
                        if (u[i] ~ /^https?:/ && u[i] !~ /security/ && s[j] != "" && s[j] !~ /[-\/]/) {
                            print u[i]; found = 1; exit
                        }
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^[ \t]+/, "", uris) }
            tolower($1) == "suites:"  { $1 = ""; suites = $0; sub(/^[ \t]+/, "", suites) }
            tolower($1) == "enabled:" { enabled = $2 }
            END { if (!found) flush() }' "$f"
    done
}

mirror=${TLALLOC_FT_MIRROR:-$(find_mirror | head -n 1)}
[ -n "$mirror" ] || die "no Debian archive URI found in /etc/apt/sources.list{,.d/*}; set TLALLOC_FT_MIRROR"
mirror=${mirror%/}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || die "$keyring not found (package debian-archive-keyring)"
log "Debian archive: $mirror (suite $suite, component main)"

# --- Build dependencies -------------------------------------------------------------
# Headers for the standard library's C modules; without them configure still works
# but the modules are skipped (and `works` above would reject the result).
deps=(build-essential pkg-config xz-utils libssl-dev libffi-dev zlib1g-dev libbz2-dev
      liblzma-dev libsqlite3-dev libreadline-dev libncurses-dev uuid-dev
      libgdbm-dev libgdbm-compat-dev)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        log "installing build dependencies: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
            { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; }
    else
        log "warning: missing build dependencies (run as root to install): ${missing[*]}"
    fi
fi

# --- Source: apt-get source with a private configuration -------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/tlalloc-cpython-XXXXXX")
trap 'rm -rf "$work"' EXIT
apt_dir=$work/apt
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/src"
echo "deb-src [signed-by=$keyring] $mirror $suite main" > "$apt_dir/sources.list"
: > "$apt_dir/status"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
    -o "Dir::State=$apt_dir"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Sandbox::User=root"
    -o "Debug::NoLocking=1"
)
log "apt-get update (private lists in $apt_dir)"
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only -qq python3.13 >&2)
tarball=$(ls "$work"/src/python3.13_*.orig.tar.xz 2>/dev/null | head -n 1)
[ -n "$tarball" ] || die "apt-get source did not fetch python3.13_*.orig.tar.xz"
log "upstream source: $(basename "$tarball")"
tar -C "$work/src" -xJf "$tarball"
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'Python-3.13*' | head -n 1)
[ -n "$srcdir" ] || die "no Python-3.13* directory in $(basename "$tarball")"

# --- Build and install ----------------------------------------------------------------
start=$(date +%s)
rm -rf "$prefix"
log "configure --disable-gil --prefix=$prefix"
(cd "$srcdir" && ./configure -q --disable-gil --prefix="$prefix" >&2)
log "make -j$jobs"
(cd "$srcdir" && make -s -j"$jobs" >"$work/make.log" 2>&1) || { tail -n 50 "$work/make.log" >&2; die "make failed"; }
grep -A3 'necessary bits to build these optional modules were not found' "$work/make.log" >&2 || true
log "make install"
(cd "$srcdir" && make -s install >"$work/install.log" 2>&1) || { tail -n 50 "$work/install.log" >&2; die "make install failed"; }
touch "$prefix/.tlalloc-build-complete"
works || die "the installed interpreter $python does not work (see above)"
log "built in $(( $(date +%s) - start )) s"
echo "$python"
