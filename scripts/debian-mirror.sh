# Sourced by scripts/caffe-env and scripts/docker-build.sh: which Debian mirror (and apt proxy) this
# machine uses, the one place that knows how to read it from the apt configuration. Nothing here
# names a mirror host: the mirror is the first Debian archive in this machine's apt sources
# (deb822 /etc/apt/sources.list.d/*.sources `URIs:`, or `deb` lines in /etc/apt/sources.list and
# sources.list.d/*.list; APT_SOURCES_DIR replaces /etc/apt), and MAGIC_INIT_DEBIAN_MIRROR overrides
# it (needed on Ubuntu, whose sources name no Debian archive). The caller defines die MESSAGE.

# debian(suite): whether an apt suite is a Debian archive suite (not security), for both formats.
DEBIAN_SUITE_AWK='
function debian(suite) {
    if (suite ~ /-security$|\/updates$/) return 0
    sub(/-(updates|backports|backports-sloppy|proposed-updates)$/, "", suite)
    return suite ~ /^(jessie|stretch|buster|bullseye|bookworm|trixie|forky|duke|sid|stable|testing|unstable|oldstable|oldoldstable)$/
}'

# debian_mirror FILE...: print the URI of the first enabled Debian archive (`deb`, not deb-src,
# not the security archive) that the apt sources FILEs name; nothing when none does (Ubuntu).
# A Debian archive is one whose suite is a Debian codename or alias, optionally with -updates,
# -backports or -proposed-updates; `*-security` and `*/updates` suites are another archive.
debian_mirror() {
    local f
    for f in "$@"; do
        [ -r "$f" ] || continue
        case "$f" in
            *.sources) awk "$DEBIAN_SUITE_AWK"'
                function flush() {
                    if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
                        sub(/^[ \t]+/, "", suites); n = split(suites, s, /[ \t]+/)
                        for (i = 1; i <= n; i++) if (debian(s[i])) { sub(/^[ \t]+/, "", uris); split(uris, u, /[ \t]+/); if (usable(u[1])) { print u[1]; exit } }
                    }
                    types = uris = suites = ""; enabled = "yes"; key = ""
                }
                function usable(uri) { return uri ~ /^(https?|ftp|file):/ }
                BEGIN { enabled = "yes" }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { v = $0; sub(/^[ \t]+/, "", v); if (key == "types") types = types " " v;
                           else if (key == "uris") uris = uris " " v; else if (key == "suites") suites = suites " " v; next }
                {
                    key = tolower($0); sub(/:.*/, "", key)
                    v = $0; sub(/^[^:]*:[ \t]*/, "", v); sub(/[ \t]+$/, "", v)
                    if (key == "types") types = v; else if (key == "uris") uris = v
                    else if (key == "suites") suites = v; else if (key == "enabled") enabled = v
                }
                END { flush() }' "$f" ;;
            *) awk "$DEBIAN_SUITE_AWK"'
                {
                    line = $0; sub(/#.*/, "", line)
                    if (line !~ /^[ \t]*deb[ \t]/) next
                    sub(/^[ \t]*deb[ \t]+/, "", line)
                    if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
                    split(line, w, /[ \t]+/)
                    if (w[1] ~ /^(https?|ftp|file):/ && debian(w[2])) { print w[1]; exit }
                }' "$f" ;;
        esac
    done | head -n 1 | sed 's:/*$::'
}

# The machine's apt sources, in apt's order: sources.list, then sources.list.d/ sorted.
apt_source_files() {
    local dir="${APT_SOURCES_DIR:-/etc/apt}"
    echo "$dir/sources.list"
    ls -1 "$dir"/sources.list.d/*.list "$dir"/sources.list.d/*.sources 2>/dev/null | LC_ALL=C sort
}

# debian_mirror_to_use [FILE...]: the mirror to build from: MAGIC_INIT_DEBIAN_MIRROR, else the
# Debian mirror of FILEs (default: this machine's apt sources), else `die` (the caller's) with a
# one-line error naming the override.
debian_mirror_to_use() {
    if [ -n "${MAGIC_INIT_DEBIAN_MIRROR:-}" ]; then echo "${MAGIC_INIT_DEBIAN_MIRROR%/}"; return 0; fi
    local files m
    if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(apt_source_files); fi
    m="$(debian_mirror "${files[@]}")"
    [ -n "$m" ] || die "no Debian mirror in this machine's apt sources (${files[*]}): set MAGIC_INIT_DEBIAN_MIRROR to a Debian mirror that carries bullseye (e.g. your mirror's .../debian)"
    echo "$m"
}

# apt_http_proxy: apt's own HTTP proxy (Acquire::http::Proxy), if this machine sets one; else nothing.
apt_http_proxy() {
    local proxy
    proxy="$(apt-config dump 2>/dev/null | sed -n 's/^Acquire::http::Proxy "\(.*\)";$/\1/p' | head -n 1)"
    if [ -n "$proxy" ] && [ "$proxy" != DIRECT ]; then echo "$proxy"; fi
}
