# Shared by scripts/demo, scripts/test and scripts/bench: install what is
# missing on a Debian 12 machine, then build with meson.

VTPMD_PACKAGES=(
	meson ninja-build pkg-config gcc
	libtpms-dev libfuse3-dev fuse3 libcurl4-openssl-dev libjson-c-dev
	libtss2-dev libssl-dev libinih-dev
	tpm2-tools swtpm swtpm-tools openssl python3 procps psmisc
	tpm2-abrmd libtss2-tcti-tabrmd0 dbus
	clang libclang-rt-14-dev valgrind util-linux
)

vtpmd_deps() {
	local missing=() p
	for p in "${VTPMD_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "vtpmd: missing packages: ${missing[*]} (run as root to install them)" >&2
		return 1
	fi
	echo "vtpmd: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# vtpmd_build DIR [meson options...]
vtpmd_build() {
	local dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >&2
	elif [ $# -gt 0 ]; then
		# an existing build (say, the demo's) takes this caller's options too
		meson configure "$dir" "$@" >&2
	fi
	ninja -C "$dir" >&2
}
