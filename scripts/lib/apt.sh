# Sourced by the project's scripts. ensure_packages PKG... installs the Debian packages that are
# missing (needs root), running `apt-get update` first when apt does not know them yet.
# All output goes to stderr, so scripts that print a result on stdout stay clean.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "missing Debian packages (${missing[*]}): run this as root to install them" >&2
        return 1
    fi
    echo "installing Debian packages: ${missing[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}
