#!/usr/bin/env bash
# Builds (or reuses) a Rust-enabled Linux kernel for the Strata module and
# its qemu guest, and prints the build directory on its last line.
#
#   bash kmod/scripts/kernel.sh            # release: kernel.config
#   bash kmod/scripts/kernel.sh --debug    # debug: kernel.config + kernel-debug.config
#                                          # (lockdep, sleep-in-atomic checks)
#
# It prints e.g. ~/.cache/strata/kernel/7.2.12-1-rustc1.96.0-debug-<hash>/build.
#
# Everything slow is cached under ~/.cache/strata/ (or $STRATA_CACHE):
#   bindgen/                 bindgen-cli, built with cargo install
#   apt/                     a private apt state that can see Debian forky
#   src/linux-source-<v>/    the unpacked kernel source
#   kernel/<key>/build       the kernel build, keyed by kernel version,
#                            rustc version, variant and the hash of this
#                            script and the config fragments
#
# The system's apt sources are left alone: the kernel source package is
# downloaded (not installed) through a private apt configuration.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${STRATA_CACHE:-$HOME/.cache/strata}
kernel_package=linux-source-7.2
kernel_version=7.2.12-1
bindgen_version=0.72.1
llvm=/usr/lib/llvm-19/bin/
rustc=/usr/bin/rustc
jobs=$(nproc)

log() { echo "kernel.sh: $*" >&2; }

packages=(rustc-web rust-web-src clang-19 lld-19 llvm-19 libclang-19-dev flex bison libelf-dev
    libssl-dev bc cpio kmod qemu-system-x86 busybox-static make gcc python3 gzip xz-utils util-linux)

install_packages() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

install_bindgen() {
    local root=$cache/bindgen/$bindgen_version
    if [[ ! -x $root/bin/bindgen ]]; then
        log "building bindgen-cli $bindgen_version"
        LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install bindgen-cli --version "$bindgen_version" \
            --locked --root "$root" >&2
    fi
    bindgen=$root/bin/bindgen
}

fetch_source() {
    source_dir=$cache/src/$kernel_package-$kernel_version
    if [[ -f $source_dir/Makefile ]]; then
        return
    fi
    log "downloading $kernel_package=$kernel_version"
    local apt=$cache/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/download"
    local mirror
    mirror=$(grep -m1 -oE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
        grep -m1 -oE 'https?://[^ ]+/debian/?' /etc/apt/sources.list 2>/dev/null || echo http://deb.debian.org/debian)
    cat >"$apt/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror forky main
EOF
    local options=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
    apt-get "${options[@]}" update -qq >&2
    (cd "$apt/download" && apt-get "${options[@]}" download "$kernel_package=$kernel_version" >&2)
    local deb
    deb=$(ls "$apt"/download/"${kernel_package}"_*.deb | head -1)
    local unpacked=$apt/unpacked
    rm -rf "$unpacked"
    dpkg-deb -x "$deb" "$unpacked"
    local tarball
    tarball=$(ls "$unpacked"/usr/src/linux-source-*.tar.* | head -1)
    rm -rf "$source_dir.tmp"
    mkdir -p "$source_dir.tmp"
    tar -xf "$tarball" -C "$source_dir.tmp" --strip-components=1
    rm -rf "$unpacked" "$source_dir"
    mv "$source_dir.tmp" "$source_dir"
}

variant=release
fragments=("$here/kernel.config")
if [[ ${1:-} == --debug ]]; then
    variant=debug
    fragments+=("$here/kernel-debug.config")
fi

build_kernel() {
    local rustc_version hash
    rustc_version=$($rustc --version | awk '{print $2}')
    hash=$(cat "${fragments[@]}" "$here/kernel.sh" | sha256sum | cut -c1-12)
    local key=$kernel_version-rustc$rustc_version-$variant-$hash
    build=$cache/kernel/$key/build
    if [[ -f $build/arch/x86/boot/bzImage && -f $build/.strata-complete ]]; then
        return
    fi
    log "building the kernel in $build (a few minutes on 2 cores)"
    mkdir -p "$build"
    local make=(make -C "$source_dir" O="$build" LLVM="$llvm" RUSTC="$rustc" BINDGEN="$bindgen" -j"$jobs")
    "${make[@]}" tinyconfig >&2
    (cd "$build" && KCONFIG_CONFIG=.config "$source_dir/scripts/kconfig/merge_config.sh" -m -O "$build" \
        .config "${fragments[@]}" >&2)
    "${make[@]}" olddefconfig >&2
    # Every line of the fragment must have survived; a missing dependency
    # silently drops an option (RUST vanishes without 64BIT, for one).
    local lost=0
    while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        if [[ $line == *=n ]]; then
            local name=${line%=n}
            if grep -q "^$name=" "$build/.config"; then
                log "lost: $line"
                lost=1
            fi
        elif ! grep -qx "$line" "$build/.config"; then
            log "lost: $line"
            lost=1
        fi
    done < <(cat "${fragments[@]}")
    if ((lost)); then
        log "the kernel config dropped lines of ${fragments[*]}"
        exit 1
    fi
    "${make[@]}" rustavailable >&2
    "${make[@]}" >&2
    touch "$build/.strata-complete"
}

# One run at a time: two runs would build into the same directory.
mkdir -p "$cache"
exec 9>"$cache/kernel.lock"
flock 9
install_packages
install_bindgen
fetch_source
build_kernel
echo "$build"
