#!/bin/bash
# Builds the cached, package-only parts of the Xen-under-QEMU harness (docs/xen-tcg.md):
#   xen         the hypervisor (32-bit multiboot ELF, QEMU -kernel loads it)
#   vmlinuz     Debian's kernel, dom0's and the guests'
#   dom0.cpio   dom0's root (debootstrap minbase + Xen toolstack + node), with /root/vmlinuz and
#               /root/domu-base.cpio.gz (busybox, xen-blkfront.ko, fio and its libraries) for the guests
# Nothing test-specific goes in here: /init, the hotplug script, the guest's /init and the job files
# come in the per-run payload (payload.ts), so changing them does not rebuild the images.
#
# usage: images.sh key           print the cache key (package versions + hash of this script)
#        images.sh build DIR     build into DIR (which must not exist); prints progress on stderr
#        images.sh tools         install the host tools (QEMU, debootstrap, cpio, fio) if missing
set -euo pipefail
export LC_ALL=C DEBIAN_FRONTEND=noninteractive

XEN_PKG=xen-hypervisor-4.17-amd64
# open-iscsi: Linux's own iSCSI initiator (iscsid, iscsiadm) for the seed's chain (dom0-init.sh, CHAIN=iscsi);
# strace: serve's system calls per request, counted in dom0 (--mode same-guest, `strace -c -f -p`)
DOM0_PKGS=xen-utils-4.17,xenstore-utils,kmod,procps,busybox-static,libstdc++6,mount,util-linux,open-iscsi,strace
# Kernel modules beyond the Xen drivers: loop, and the SCSI disk and iSCSI-over-TCP initiator stack
# (their dependencies, and the crypto modules their crc helpers ask for first, follow from modinfo;
# iscsi_tcp asks the crypto API for crc32c when a connection is made: crc32c_generic)
EXTRA_MODULES="loop sd_mod iscsi_tcp crc32c_generic crct10dif_generic crc64_rocksoft_generic"
HOST_TOOLS="qemu-system-x86 debootstrap busybox-static cpio kmod fio"

candidate() { apt-cache policy "$1" | awk '/Candidate:/{print $2; exit}'; }
kernel_pkg() { apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}'; }
installed() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }
log() { echo "images: $*" >&2; }

key() {
  local kp; kp=$(kernel_pkg)
  {
    echo "xen=$(candidate $XEN_PKG) utils=$(candidate xen-utils-4.17)"
    echo "kernel=$kp $(candidate "$kp")"
    echo "fio=$(installed fio) busybox=$(installed busybox-static) node=$(node --version) ldso=$(installed libc6)"
    echo "dom0=$DOM0_PKGS"
    sha256sum "$0" | cut -d' ' -f1
  } | sha256sum | cut -c1-16
}

host_tools() {
  local missing=()
  for p in $HOST_TOOLS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing host tools: ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The .ko paths (relative to lib/modules/KV) of MODULES and everything they need: modinfo's depends
# and its softdep "pre:" (crc-t10dif asks for crct10dif first); a name with no .ko is built in.
module_closure() { # MODDIR MODULES...
  local dir=$1; shift
  local -A seen=(); local queue=("$@") m f more
  while [ ${#queue[@]} -gt 0 ]; do
    m=${queue[0]//-/_}; queue=("${queue[@]:1}")
    [ -n "${seen[$m]:-}" ] && continue; seen[$m]=1
    f=$(cd "$dir" && find kernel \( -name "$m.ko" -o -name "${m//_/-}.ko" \) -print -quit)
    [ -n "$f" ] || continue
    echo "$f"
    more=$(modinfo -F depends "$dir/$f" | tr ',' ' ')
    more="$more $(modinfo -F softdep "$dir/$f" | sed -n 's/.*pre: *\([^ ]*\).*/\1/p')"
    for m in $more; do queue+=("$m"); done
  done
}

# Copy a dynamically linked binary and every library ldd names (at the paths ldd resolves) into ROOT.
copy_with_libs() { # ROOT BINARY DEST
  local root=$1 bin=$2 dest=$3 lib
  install -D -m755 "$bin" "$root$dest"
  for lib in $(ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/lib64\//{print $1}'); do
    [ -e "$root$lib" ] && continue
    # keep the mode: the loader must stay executable (the kernel opens PT_INTERP for execution)
    install -D -m "$(stat -L -c %a "$lib")" "$(readlink -f "$lib")" "$root$lib"
  done
}

build() {
  local out=$1 mirror kp kv t0=$SECONDS
  [ ! -e "$out" ] || { log "$out exists"; exit 1; }
  host_tools
  mkdir -p "$out"/work/debs && cd "$out"/work
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  kp=$(kernel_pkg)

  log "downloading $XEN_PKG and $kp"
  (cd debs && apt-get download -q "$XEN_PKG" "$kp" >/dev/null)
  mkdir x k
  dpkg-deb -x debs/${XEN_PKG}_*.deb x
  dpkg-deb -x debs/${kp}_*.deb k
  zcat x/boot/xen-4.17-amd64.gz > "$out"/xen
  kv=$(ls k/lib/modules)
  cp k/boot/vmlinuz-"$kv" "$out"/vmlinuz

  log "debootstrap bookworm minbase + $DOM0_PKGS (about 3-4 minutes)"
  debootstrap --variant=minbase --include="$DOM0_PKGS" bookworm rootfs "$mirror" > debootstrap.log 2>&1 \
    || { tail -20 debootstrap.log >&2; exit 1; }
  rm -rf rootfs/usr/share/{doc,man,locale,info,i18n}/* rootfs/var/lib/apt/lists/* rootfs/var/cache/apt/archives/*.deb

  # Xen drivers, both block backends' and the frontend, $EXTRA_MODULES; then modules.dep
  mkdir -p rootfs/lib/modules/"$kv"
  # shellcheck disable=SC2046,SC2086
  (cd k/lib/modules/"$kv" && cp --parents -r kernel/drivers/xen kernel/drivers/block/xen-blkback \
     kernel/drivers/block/xen-blkfront.ko $(module_closure . $EXTRA_MODULES) modules.order modules.builtin \
     modules.builtin.modinfo "$out"/work/rootfs/lib/modules/"$kv"/)
  depmod -b rootfs "$kv"
  mkdir -p rootfs/root rootfs/var/log/xen/console rootfs/var/lib/xen rootfs/opt
  cp "$out"/vmlinuz rootfs/root/vmlinuz
  copy_with_libs rootfs "$(readlink -f /usr/bin/node)" /usr/local/bin/node

  log "guest initramfs: busybox, xen-blkfront.ko, fio $(installed fio) and its libraries"
  mkdir -p domu/{bin,proc,sys,dev,tmp,run,lib/modules}
  cp /bin/busybox domu/bin/busybox
  cp k/lib/modules/"$kv"/kernel/drivers/block/xen-blkfront.ko domu/lib/modules/
  copy_with_libs domu /usr/bin/fio /usr/bin/fio
  (cd domu && find . | sort | cpio -o -H newc --quiet | gzip -1 > "$out"/work/rootfs/root/domu-base.cpio.gz)

  log "packing dom0.cpio"
  (cd rootfs && find . | sort | cpio -o -H newc --quiet > "$out"/dom0.cpio)
  {
    echo "{\"kernel\":\"$kv\",\"xen\":\"$(candidate $XEN_PKG)\",\"fio\":\"$(installed fio)\","
    echo "\"node\":\"$(node --version)\",\"built_seconds\":$((SECONDS - t0)),\"built_at\":\"$(date -u +%FT%TZ)\"}"
  } > "$out"/manifest.json
  cd "$out" && rm -rf work
  log "done in $((SECONDS - t0)) s: $(du -sh "$out" | cut -f1)"
}

case "${1:-}" in
  key) key ;;
  build) build "${2:?usage: images.sh build DIR}" ;;
  tools) host_tools ;;
  *) echo "usage: images.sh key | build DIR | tools" >&2; exit 2 ;;
esac
