# What the scripts share; each sources it (it runs nothing by itself).

# Runs a command as root: as it is when root already, else through sudo.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# install_missing PKG...: installs the Debian packages named, if any (a fresh
# machine has no package lists until the first update).
install_missing() {
    [ $# -gt 0 ] || return 0
    echo "installing $*" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
