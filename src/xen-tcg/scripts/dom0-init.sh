#!/bin/bash
# dom0's /init for the Xen-under-QEMU harness (arrives in the per-run payload; see docs/xen-tcg.md).
# Brings up the Xen toolstack, makes a backing disk, starts one block backend (MODE=kernel: Linux's
# xen-blkback; MODE=ours: `blkback serve`), then runs the guests and reports on the serial console:
#   BLKBACK-PHASE <text>              where it is (the orchestrator prints these as progress)
#   BLKBACK-RESULT {json}             one fact per line, asserted by src/xen-tcg/checks.ts
#   BLKBACK-FILE-BEGIN <name> ... BLKBACK-FILE-END <name>   a text file, verbatim
#   G <tag>| <line>                   a guest's console, as xenconsoled logs it
export PATH=/usr/lib/xen-4.17/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /opt/blkback-test/config.sh

phase() { echo "BLKBACK-PHASE $*"; }
result() { echo "BLKBACK-RESULT $1"; }
# One write() per line (sed -u): lines other processes print meanwhile (relays, the CPU sampler) then
# fall between this file's lines, never inside one, and the orchestrator can sort them out.
print_file() { echo "BLKBACK-FILE-BEGIN $1"; sed -u 's/\r//g' "$2" 2>&1; echo; echo "BLKBACK-FILE-END $1"; }
finish() { phase "dom0: done"; sync; /bin/busybox poweroff -f; }
die() { result "{\"src\":\"dom0\",\"check\":\"fatal\",\"ok\":false,\"message\":\"$*\"}"; finish; }

mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /run
mkdir -p /run/lock /run/xen /run/xenstored /var/lib/xenstored /var/log/xen/console /var/lib/xen /run/blkback
phase "dom0: init (mode=$MODE)"

for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd loop; do modprobe $m || die "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file=/run/xenstored.pid || die "xenstored failed"
sleep 1
xen-init-dom0 >/dev/null || die "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen/console || die "xenconsoled failed"
phase "dom0: toolstack up"

# What a clock reading, a system call, a fixed piece of JavaScript and an event-loop turn cost here:
# in a PV dom0 every system call goes through Xen, and a clock without vDSO support makes each clock
# reading one too (docs/xen-tcg.md, "System calls are the cost"). The harness prints the host's figures.
CLOCKSOURCE=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)
phase "dom0: clocksource ${CLOCKSOURCE:-unknown}; $(node /opt/blkback/cost-probe.js 2>&1)"

# ---- backing disks (files in dom0's RAM behind loop devices) -----------------------------------
# In a tmpfs of their own, sized for them: the root file system (the unpacked initramfs) has too
# little room left for two large disks, and a short write there once left an empty guest config.
DISKS=/srv/disks
mkdir -p $DISKS
# (+ 48: --mode same-guest's copy-path disk for the system-call count, sparse, at most 32 MiB written)
mount -t tmpfs -o size=$(( 2 * DISK_MIB + DISK2_MIB + 56 ))m disks $DISKS || die "cannot mount a tmpfs for the backing files"
backing_file() { # PATH MIB: random data, all of it
  dd if=/dev/urandom of="$1" bs=1M count="$2" 2>/run/dd.err && [ "$(stat -c %s "$1")" = $(( $2 * 1048576 )) ] ||
    die "cannot write $1 ($2 MiB): $(tail -1 /run/dd.err); $(df -m $DISKS | tail -1)"
}
phase "dom0: backing file ${DISK_MIB} MiB of random data"
backing_file $DISKS/disk.img "$DISK_MIB"
backing_file $DISKS/disk2.img "$DISK2_MIB"
losetup /dev/loop0 $DISKS/disk.img && losetup /dev/loop1 $DISKS/disk2.img || die "losetup failed"
DISK_BYTES=$(stat -c %s $DISKS/disk.img)
MARKER_OFF=$(( DISK_BYTES - 65536 ))   # in the last MiB, which the fio jobs leave alone
DISKSPEC="format=raw,vdev=xvda,access=rw,backendtype=phy,script=/etc/xen/scripts/block-fast,target=/dev/loop0"
DISK2SPEC="format=raw,vdev=xvdb,access=rw,backendtype=phy,script=/etc/xen/scripts/block-fast,target=/dev/loop1"

# ---- the backend under test ---------------------------------------------------------------------
SERVE_PID=
start_kernel_backend() {
  modprobe xen-blkback || die "modprobe xen-blkback failed"
  phase "dom0: backend is the kernel's xen-blkback"
}
stop_kernel_backend() { # --mode paired: unload it so that serve can own backend/vbd
  local i
  for i in $(seq 1 30); do rmmod xen_blkback 2>/dev/null && { phase "dom0: xen-blkback unloaded"; return 0; }; sleep 1; done
  die "rmmod xen_blkback failed for 30 s"
}
start_serve() {
  # beside the kernel's backend (--mode same-guest) serve owns backend/blkback; otherwise backend/vbd
  [ "$MODE" = same-guest ] || ! lsmod | grep -q '^xen_blkback' || die "xen-blkback is loaded in mode=$MODE"
  : > /run/blkback/serve.log
  if [ -x /usr/bin/gdb ]; then
    # BLKBACK_XEN_DEBUG=1 put the host's gdb in the payload (payload.ts): a crash leaves every thread's backtrace in the serve log
    gdb -q -batch -ex 'set pagination off' -ex 'handle SIGPIPE SIGUSR1 SIGUSR2 nostop noprint pass' -ex run \
      -ex 'info registers' -ex 'x/6i $pc' -ex 'info threads' -ex 'thread apply all bt 30' \
      --args node /opt/blkback/dist/src/cli/main.js serve $SERVE_ARGS >> /run/blkback/serve.log 2>&1 &
  else
    NODE_ARGS="$NODE_FLAGS"; [ "$PROFILE" = 1 ] && NODE_ARGS="$NODE_ARGS --cpu-prof --cpu-prof-dir=/run/prof"
    TRACER=""; [ "$STRACE" = 1 ] && [ -x /usr/bin/strace ] && TRACER="strace -c -f -o /run/strace.txt"
    env $SERVE_ENV $TRACER node $NODE_ARGS /opt/blkback/dist/src/cli/main.js serve $SERVE_ARGS >> /run/blkback/serve.log 2>&1 &
  fi
  SERVE_PID=$!
  echo $SERVE_PID > /run/blkback/serve.pid   # for the CPU sampler
  [ -n "$SERVE_TAIL" ] || { tail -n +1 -F /run/blkback/serve.log 2>/dev/null | sed -u 's/^/SERVE| /' & SERVE_TAIL=1; }
  local i
  for i in $(seq 1 60); do [ -S "$CONTROL_SOCKET" ] && break; kill -0 $SERVE_PID 2>/dev/null || break; sleep 1; done
  if [ -S "$CONTROL_SOCKET" ]; then
    phase "dom0: backend is blkback serve (pid $SERVE_PID, up after ${i}s)"
  else
    die "blkback serve did not create $CONTROL_SOCKET within 60 s"
  fi
}
stop_serve() { # --mode paired: serve exits on SIGTERM
  local i
  kill $SERVE_PID 2>/dev/null
  for i in $(seq 1 60); do kill -0 $SERVE_PID 2>/dev/null || break; sleep 1; done
  kill -0 $SERVE_PID 2>/dev/null && die "blkback serve did not exit within 60 s of SIGTERM"
  rm -f /run/blkback/serve.pid "$CONTROL_SOCKET"; SERVE_PID=
  phase "dom0: blkback serve stopped"
}
case "$MODE" in
  kernel) start_kernel_backend ;;
  ours) start_serve ;;
esac
result "{\"src\":\"dom0\",\"check\":\"backend\",\"mode\":\"$MODE\",\"ok\":true,\"disk_bytes\":$DISK_BYTES}"

# Every 2 s: dom0's CPU ticks (busy = user+nice+system+irq+softirq, idle = idle+iowait, steal = time
# Xen ran other vCPUs) and, in mode=ours, serve's own (utime+stime, split, and its main thread's).
# The orchestrator attributes the samples to the fio jobs they fall in: where the two backends spend
# dom0's CPU.
cpu_sampler() {
  local serve SERVE_PID TPID
  while :; do
    SERVE_PID=$(cat /run/blkback/serve.pid 2>/dev/null)
    set -- $(head -1 /proc/stat)
    serve="serve=0"; [ -n "$SERVE_PID" ] && serve=$(awk '{print "serve=" $14 + $15 " serve_user=" $14 " serve_sys=" $15}' /proc/$SERVE_PID/stat 2>/dev/null)
    [ -n "$SERVE_PID" ] && serve="$serve $(awk '{print "main_user=" $14 " main_sys=" $15}' /proc/$SERVE_PID/task/$SERVE_PID/stat 2>/dev/null)"
    TPID=$(cat /run/blkback/target.pid 2>/dev/null)   # CHAIN=iscsi: blkback iscsi-target's ticks
    [ -n "$TPID" ] && serve="$serve $(awk '{print "target=" $14 + $15}' /proc/$TPID/stat 2>/dev/null)"
    echo "BLKBACK-CPU $(cut -d' ' -f1 /proc/uptime) busy=$(( $2 + $3 + $4 + $7 + $8 )) idle=$(( $5 + $6 )) steal=${9:-0} $serve"
    sleep 2
  done
}
cpu_sampler &
# an experiment's knob: one dom0 vCPU kept busy, as serve keeps it in mode=ours
[ "$DOM0_HOG" = 1 ] && { phase "dom0: busy loop started (DOM0_HOG)"; (while :; do :; done) & }

serve_alive() { [ -z "$SERVE_PID" ] || kill -0 "$SERVE_PID" 2>/dev/null; }
ctl() { # NAME ARGS...: run `blkback ctl ARGS` and print its output as a file
  local name=$1; shift
  timeout -k 10 90 node /opt/blkback/dist/src/cli/main.js ctl "$@" $CTL_ARGS > /run/ctl.out 2>&1
  local rc=$?
  print_file "$name" /run/ctl.out
  # on failure, what dom0 was doing (a busy or stuck process shows here)
  if [ $rc != 0 ]; then ps -eo pid,stat,pcpu,time,wchan:20,args > /run/ps.out 2>&1; print_file "ps-$name" /run/ps.out; fi
  result "{\"src\":\"dom0\",\"check\":\"$name\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
}
backend_stats() { # TAG DOMID: the vbd's request counters as the backend reports them
  if [ "$MODE" = kernel ]; then
    local d=/sys/bus/xen-backend/devices/vbd-$2-51712/statistics s=""
    for c in rd_req wr_req f_req ds_req oo_req; do s="$s\"$c\":$(cat $d/$c 2>/dev/null || echo -1),"; done
    result "{\"src\":\"dom0\",\"check\":\"stats\",\"guest\":\"$1\",\"ok\":true,${s%,}}"
  else
    ctl "ctl-stats-$1" stats --json
  fi
}

# ---- guests ---------------------------------------------------------------------------------------
TAILS=""
guest_log() { echo "/var/log/xen/console/guest-$1.log"; }
start_guest() { # TAG TYPE EXTRA...: xl create, then stream the guest's console to ours
  local tag=$1 type=$2; shift 2
  cat > /root/$tag.cfg <<EOC
name="$tag"
type="$type"
kernel="/root/vmlinuz"
ramdisk="/run/domu.cpio.gz"
extra="console=hvc0 quiet bb_tag=$tag $*"
memory=$GUEST_MEM
vcpus=${VCPUS:-1}
disk=[ '$DISKSPEC' ]
on_poweroff="destroy"
on_crash="destroy"
EOC
  [ "$type" = pvh ] && echo 'cpuid="host,rdtscp=0"' >> /root/$tag.cfg   # TSC feature TCG lacks
  # a guest of several vCPUs may take at most CAP% of one pCPU in all (credit2's cap): under emulation
  # its vCPUs would otherwise run on both emulated CPUs at once and starve dom0's backends
  [ "${VCPUS:-1}" -gt 1 ] && [ "${CAP:-0}" -gt 0 ] && echo "cap=$CAP" >> /root/$tag.cfg
  [ "$type" = pvh ] && [ "$PVH_PIN" = 1 ] && echo 'cpus="1"' >> /root/$tag.cfg   # see full_guest
  phase "$tag guest: xl create ($type)"
  local t0=$(cut -d' ' -f1 /proc/uptime) rc attempt
  # xl itself crashes now and then under emulation (SIGSEGV, malloc aborts: see destroy_guest):
  # a second try, after removing anything half made
  for attempt in 1 2; do
    timeout 300 xl create /root/$tag.cfg > /run/xl-$tag.log 2>&1; rc=$?
    [ $rc = 0 ] && break
    print_file "xl-create-$tag-$attempt" /run/xl-$tag.log
    timeout 120 xl destroy $tag > /dev/null 2>&1
  done
  local t1=$(cut -d' ' -f1 /proc/uptime)
  result "{\"src\":\"dom0\",\"check\":\"create\",\"guest\":\"$tag\",\"type\":\"$type\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc,\"attempts\":$attempt,\"seconds\":$(echo "$t1 - $t0" | awk '{print $1-$3}')}"
  [ $rc = 0 ] || return 1
  DOMID=$(xl domid $tag)
  local log; log=$(guest_log $tag)
  tail -n +1 -F "$log" 2>/dev/null | sed -u "s/\r\$//; s/^/G $tag| /" &
}
stop_tail() { pkill -f "tail -n +1 -F $(guest_log $1)" 2>/dev/null; }
guest_gone() { # TAG WORD OLD_DOMID: report the guest gone, or restarted under a new domid (an HVM
  # triple fault is a reboot to Xen, and xl restarts the guest)
  local now why="guest is gone"; now=$(xl domid "$1" 2>/dev/null)
  [ -n "$now" ] && [ "$now" != "$3" ] && why="guest restarted as domain $now (was $3): it crashed or triple-faulted"
  result "{\"src\":\"dom0\",\"check\":\"wait-$2\",\"guest\":\"$1\",\"ok\":false,\"message\":\"$why\"}"
}
wait_guest() { # TAG WORD SECONDS: until the guest prints "BLKBACK-GUEST WORD"
  local i id; id=$(xl domid "$1" 2>/dev/null)
  for i in $(seq 1 "$3"); do
    grep -q "BLKBACK-GUEST $2" "$(guest_log $1)" 2>/dev/null && return 0
    # a dead backend leaves the guest's I/O hanging: stop here rather than wait out every timeout
    serve_alive || { print_file serve-log /run/blkback/serve.log; dmesg | tail -40 > /run/dmesg.txt; print_file dom0-dmesg /run/dmesg.txt; die "blkback serve died (see SERVE| lines and the serve-log file)"; }
    # every 5 s: is the guest still there? (xenstore-exists is far cheaper than xl under emulation;
    # xl itself fails now and then there, so a domid it did not give is asked for again, not taken
    # for a dead guest; and the guest counts as gone only when two looks a second apart agree)
    if [ $((i % 5)) = 0 ]; then
      [ -n "$id" ] || id=$(xl domid "$1" 2>/dev/null)
      [ -z "$id" ] || xenstore-exists /local/domain/$id 2>/dev/null || { sleep 1; xenstore-exists /local/domain/$id 2>/dev/null; } || { guest_gone "$1" "$2" "$id"; return 1; }
    fi
    sleep 1
  done
  result "{\"src\":\"dom0\",\"check\":\"wait-$2\",\"guest\":\"$1\",\"ok\":false,\"message\":\"no '$2' within $3 s\"}"
  return 1
}
destroy_guest() { # TAG: xl destroy, then the backend's xenstore directory must go
  local tag=$1 id; id=$(xl domid $tag 2>/dev/null)
  # the whole console log once more: the live relay (tail -F | sed) has lost a guest's lines
  print_file "console-$tag" "$(guest_log $tag)"
  phase "$tag guest: xl destroy"
  # xl itself crashes now and then under emulation (SIGSEGV, malloc aborts): try it up to 3 times
  local rc=1 attempt gone=false i
  for attempt in 1 2 3; do
    timeout 120 xl destroy $tag >> /run/xl-destroy.log 2>&1; rc=$?
    [ $rc = 0 ] && break
    xl domid $tag >/dev/null 2>&1 || { rc=0; break; }
  done
  # xl restarts a guest that rebooted (to Xen an HVM triple fault is a reboot), and a restart can land
  # just as the guest is destroyed: one came back under the same name and wrote to the disk while the
  # next guest read it. No guest may outlive this function.
  local again revived=0
  for again in 1 2 3 4 5; do
    sleep 1
    xl domid $tag >/dev/null 2>&1 || continue
    revived=$(( revived + 1 ))
    timeout 120 xl destroy $tag >> /run/xl-destroy.log 2>&1
  done
  xl domid $tag >/dev/null 2>&1 && rc=1
  [ $revived != 0 ] && phase "$tag guest: came back after xl destroy ($revived times); destroyed again"
  for i in $(seq 1 30); do
    xenstore-exists /local/domain/0/backend/vbd/$id 2>/dev/null || { gone=true; break; }
    sleep 1
  done
  sleep 1; stop_tail $tag
  result "{\"src\":\"dom0\",\"check\":\"destroy\",\"guest\":\"$tag\",\"ok\":$([ $rc = 0 ] && $gone && echo true || echo false),\"rc\":$rc,\"attempts\":$attempt,\"backend_dir_gone\":$gone,\"backend_alive\":$(serve_alive && echo true || echo false)}"
}
marker_check() { # TAG MARKER: is the guest's fsynced marker in the backing file?
  local got; got=$(dd if=$DISKS/disk.img bs=4096 skip=$(( MARKER_OFF / 4096 )) count=1 2>/dev/null | head -c ${#2})
  result "{\"src\":\"dom0\",\"check\":\"marker\",\"guest\":\"$1\",\"ok\":$([ "$got" = "$2" ] && echo true || echo false),\"offset\":$MARKER_OFF}"
}
dom0_md5() { # TAG: the backing file as dom0 sees it, before the guest reads it
  result "{\"src\":\"dom0\",\"check\":\"backing\",\"guest\":\"$1\",\"ok\":true,\"bytes\":$DISK_BYTES,\"md5\":\"$(md5sum < $DISKS/disk.img | cut -d' ' -f1)\"}"
}

# The guests' initramfs: the cached base (busybox, blkfront, fio) + this run's /init and job files
cat /root/domu-base.cpio.gz /opt/blkback-test/domu-overlay.cpio.gz > /run/domu.cpio.gz

full_guest() { # TAG TYPE HOTPLUG: every check, both fio jobs, optionally disk hotplug
  local tag=$1 type=$2 marker="BLKBACK-MARKER-$1-$RANDOM$RANDOM"
  dom0_md5 $tag
  local runs; eval "runs=\${RUNS_$tag:-1}"   # runs of each fio job in this guest (config.sh)
  # PVH guests triple-fault under QEMU 7.2's emulated SVM, mostly while dom0 is busy (docs/xen-tcg.md):
  # the PVH guest gets pCPU 1 to itself and dom0's vCPUs share pCPU 0 while it lives (PVH_PIN=1)
  local pinned=0
  if [ "$2" = pvh ] && [ "$PVH_PIN" = 1 ] && xl vcpu-pin Domain-0 all 0 > /dev/null 2>&1; then
    pinned=1; phase "dom0: vCPUs pinned to pCPU 0; the PVH guest gets pCPU 1"
  fi
  start_guest $tag $type bb_role=checks bb_marker=$marker bb_marker_off=$MARKER_OFF bb_hotplug=$3 bb_runs=$runs || { [ $pinned = 1 ] && xl vcpu-pin Domain-0 all all > /dev/null 2>&1; return; }
  wait_guest $tag marker-written 300 && marker_check $tag "$marker"
  wait_guest $tag checks-done 900
  backend_stats $tag $DOMID
  [ "$MODE" = ours ] && ctl "ctl-list-$tag" list
  if [ "$3" = 1 ] && wait_guest $tag hotplug-ready 60; then
    result "{\"src\":\"dom0\",\"check\":\"backing2\",\"guest\":\"$tag\",\"ok\":true,\"bytes\":$(stat -c %s $DISKS/disk2.img),\"md5\":\"$(md5sum < $DISKS/disk2.img | cut -d' ' -f1)\"}"
    phase "$tag guest: xl block-attach xvdb"
    timeout 120 xl block-attach $tag "$DISK2SPEC" > /run/xl-attach.log 2>&1
    local rc=$?; [ $rc = 0 ] || print_file "xl-block-attach-$tag" /run/xl-attach.log
    result "{\"src\":\"dom0\",\"check\":\"block-attach\",\"guest\":\"$tag\",\"ok\":$([ $rc = 0 ] && echo true || echo false)}"
    [ "$MODE" = ours ] && ctl "ctl-list-$tag-attached" list
    if wait_guest $tag hotplug-seen 120; then
      phase "$tag guest: xl block-detach xvdb"
      timeout 120 xl block-detach $tag xvdb > /run/xl-detach.log 2>&1
      rc=$?; [ $rc = 0 ] || print_file "xl-block-detach-$tag" /run/xl-detach.log
      result "{\"src\":\"dom0\",\"check\":\"block-detach\",\"guest\":\"$tag\",\"ok\":$([ $rc = 0 ] && echo true || echo false)}"
      wait_guest $tag hotplug-gone 120
    fi
  fi
  destroy_guest $tag
  [ $pinned = 1 ] && xl vcpu-pin Domain-0 all all > /dev/null 2>&1
}

# ---- the seed's chain (CHAIN=iscsi, --mode same-guest) -------------------------------------------
# The mail's test bed in one boot: `blkback iscsi-target` (the build serve uses) exports RAM disks
# (files in the tmpfs), dom0's own Linux initiator (open-iscsi: iscsid, iscsiadm, iscsi_tcp) logs in
# over loopback, and the LUNs become SCSI disks that the two backends serve to the guest, each with
# phy:. LUN 2 is also served straight by blkback serve's own initiator (target=iscsi://...).
IQN=iqn.2026-12.org.blkback:seed
PORTAL=127.0.0.1:3260
TARGET_PID=
lun_dev() { # LUN: the SCSI disk of our target's LUN, once the kernel has it
  local d; for d in /sys/class/scsi_device/*:*:*:$1/device/block/*; do [ -e "$d" ] && { echo "/dev/${d##*/}"; return 0; }; done
  return 1
}
iscsi_chain_up() {
  phase "dom0: iSCSI chain: blkback iscsi-target on $PORTAL, LUNs 0 (xvda), 1 (xvdb), 2 (xvdc)"
  node /opt/blkback/dist/src/cli/main.js iscsi-target --target-name $IQN --portal $PORTAL --allow ALL \
    --allow-path $DISKS --lun 0=file:$DISKS/disk.img --lun 1=file:$DISKS/disk3.img --lun 2=file:$DISKS/disk2.img \
    --control-socket /run/blkback/iscsi-target.sock > /run/blkback/target.log 2>&1 &
  TARGET_PID=$!
  echo $TARGET_PID > /run/blkback/target.pid   # for the CPU sampler
  # nothing else here needs the loopback interface, so nothing has brought it up
  /bin/busybox ip link set lo up || die "cannot bring up lo"
  # iscsi_tcp asks the crypto API for crc32c as it makes a connection (digests or not)
  for m in crc32c_generic scsi_mod sd_mod iscsi_tcp; do modprobe $m || die "modprobe $m failed"; done
  mkdir -p /etc/iscsi/nodes /etc/iscsi/send_targets /run/lock/iscsi
  echo "InitiatorName=iqn.2026-12.org.blkback:dom0" > /etc/iscsi/initiatorname.iscsi
  iscsid -f > /run/iscsid.log 2>&1 &
  local i rc t0 until; t0=$(cut -d' ' -f1 /proc/uptime)
  # the target is up when discovery answers (node starts slowly under emulation: up to 3 minutes)
  until=$(( SECONDS + 180 ))
  while [ $SECONDS -lt $until ]; do
    timeout 30 iscsiadm -m discovery -t sendtargets -p $PORTAL > /run/iscsi-discovery.log 2>&1 && break
    kill -0 $TARGET_PID 2>/dev/null || { print_file iscsi-target-log /run/blkback/target.log; die "blkback iscsi-target exited"; }
    sleep 2
  done
  print_file iscsi-discovery /run/iscsi-discovery.log
  grep -q "$IQN" /run/iscsi-discovery.log || { print_file iscsi-target-log /run/blkback/target.log; print_file iscsid-log /run/iscsid.log; die "iscsiadm discovery found no $IQN on $PORTAL"; }
  timeout 120 iscsiadm -m node -T $IQN -p $PORTAL --login > /run/iscsi-login.log 2>&1; rc=$?
  print_file iscsi-login /run/iscsi-login.log
  local l devs="" dev
  for l in 0 1 2; do
    for i in $(seq 1 60); do dev=$(lun_dev $l) && break; sleep 1; done
    devs="$devs\"lun$l\":\"${dev:-none}\","
    eval "LUN${l}_DEV=$dev"
  done
  result "{\"src\":\"dom0\",\"check\":\"iscsi-login\",\"ok\":$([ $rc = 0 ] && [ -n "$LUN0_DEV" ] && [ -n "$LUN1_DEV" ] && echo true || echo false),\"rc\":$rc,${devs}\"seconds\":$(echo "$(cut -d' ' -f1 /proc/uptime) $t0" | awk '{print $1-$2}')}"
  [ -n "$LUN0_DEV" ] && [ -n "$LUN1_DEV" ] || { print_file iscsi-target-log /run/blkback/target.log; print_file iscsid-log /run/iscsid.log; dmesg | tail -40 > /run/dmesg.txt; print_file dom0-dmesg /run/dmesg.txt; die "Linux's initiator did not make SCSI disks of LUNs 0 and 1"; }
  XVDA_DEV=$LUN0_DEV; XVDB_DEV=$LUN1_DEV
  # Linux's initiator reads each LUN whole: the bytes must be the backing file's
  for l in 0 1; do
    eval "dev=\$LUN${l}_DEV"
    local file=$DISKS/disk.img; [ $l = 1 ] && file=$DISKS/disk3.img
    local want got size
    want=$(md5sum < $file | cut -d' ' -f1)
    got=$(dd if=$dev bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    size=$(( $(cat /sys/block/${dev#/dev/}/size) * 512 ))
    result "{\"src\":\"dom0\",\"check\":\"iscsi-read-lun$l\",\"ok\":$([ "$want" = "$got" ] && [ $size = $(stat -c %s $file) ] && echo true || echo false),\"device\":\"$dev\",\"bytes\":$size,\"md5\":\"$got\",\"backing_md5\":\"$want\"}"
  done
  phase "dom0: Linux's initiator logged in: LUN 0 is $LUN0_DEV (xvda, xen-blkback), LUN 1 $LUN1_DEV (xvdb, blkback serve)"
}
iscsi_direct_disk() { # xvdc: blkback serve's own initiator, straight to LUN 2 (no SCSI disk in between)
  XVDC_MD5=$(md5sum < $DISKS/disk2.img | cut -d' ' -f1)
  phase "twin guest: blkback ctl attach xvdc (iscsi://$PORTAL/$IQN/2)"
  node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS attach $DOMID "format=raw,vdev=xvdc,access=rw,target=iscsi://$PORTAL/$IQN/2" > /run/ctl-attach-xvdc.log 2>&1
  local rc=$?; print_file ctl-attach-xvdc /run/ctl-attach-xvdc.log
  result "{\"src\":\"dom0\",\"check\":\"ctl-attach-xvdc\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc,\"backing_md5\":\"$XVDC_MD5\",\"marker\":\"$XVDC_MARKER\"}"
}
iscsi_direct_disk_done() { # the guest's fsynced marker must be in LUN 2's backing file
  local off=$(( $(stat -c %s $DISKS/disk2.img) - 65536 )) got
  got=$(dd if=$DISKS/disk2.img bs=4096 skip=$(( off / 4096 )) count=1 2>/dev/null | head -c ${#XVDC_MARKER})
  result "{\"src\":\"dom0\",\"check\":\"xvdc-marker\",\"guest\":\"twin\",\"ok\":$([ "$got" = "$XVDC_MARKER" ] && echo true || echo false),\"offset\":$off}"
  node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS detach $DOMID xvdc > /run/ctl-detach-xvdc.log 2>&1
  rc=$?; print_file ctl-detach-xvdc /run/ctl-detach-xvdc.log
  result "{\"src\":\"dom0\",\"check\":\"ctl-detach-xvdc\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
}
iscsi_chain_down() {
  iscsiadm -m node -T $IQN -p $PORTAL --logout > /run/iscsi-logout.log 2>&1
  local rc=$?; print_file iscsi-logout /run/iscsi-logout.log
  result "{\"src\":\"dom0\",\"check\":\"iscsi-logout\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
  node /opt/blkback/dist/src/cli/main.js ctl --socket /run/blkback/iscsi-target.sock list > /run/target-status.txt 2>&1
  print_file iscsi-target-status /run/target-status.txt
  kill $TARGET_PID 2>/dev/null
  local i; for i in $(seq 1 30); do kill -0 $TARGET_PID 2>/dev/null || break; sleep 1; done
  print_file iscsi-target-log /run/blkback/target.log
  result "{\"src\":\"dom0\",\"check\":\"iscsi-target-exit\",\"ok\":$(kill -0 $TARGET_PID 2>/dev/null && echo false || echo true)}"
}

# ---- --mode same-guest: queues and system calls ----------------------------------------------------
# What each disk of the twin guest negotiated, as xenstore has it: the frontend's directory
# (multi-queue-num-queues, queue-N/ring-ref*, queue-N/event-channel, or the single ring's keys at
# the top) and the backend's (multi-queue-max-queues). checks.ts reads the listing.
queues_check() { # VDEV DEVID KIND(vbd|blkback) BACKEND(kernel|ours)
  local fe=/local/domain/$DOMID/device/vbd/$2 be=/local/domain/0/backend/$3/$DOMID/$2
  { xenstore-ls -f "$fe"; xenstore-ls -f "$be"; } > /run/xs-$1.txt 2>&1
  print_file "xenstore-$1" /run/xs-$1.txt
  result "{\"src\":\"dom0\",\"check\":\"queues\",\"guest\":\"twin\",\"disk\":\"$1\",\"backend\":\"$4\",\"ok\":true,\"frontend\":\"$fe\",\"backend_path\":\"$be\",\"dom0_cpus\":$(nproc)}"
}
# serve's system calls while the guest runs a short QD 32 job on one of serve's disks: `strace -c -f`
# attached to serve (all its threads) for the job's window, serve's request counters read just
# before and just after it (`blkback ctl stats`). strace makes serve's every system call stop
# twice for the tracer, so serve runs far slower while it is attached: the job is a separate one,
# after the counted pairs. The guest waits for a go-flag that dom0 writes into the kernel's disk
# (xvda's last MiB, which no job touches): its polling reads never reach serve.
syscall_window() { # VDEV
  local disk=$1 sp i rc t0 t1 attached=false
  wait_guest twin syscalls-ready-$disk 600 || return
  if [ "$STRACE" = 1 ] || [ -x /usr/bin/gdb ]; then   # BLKBACK_XEN_STRACE / _DEBUG: serve already has a tracer
    printf '%s' "$GO_TOKEN-$disk" | dd of=$DISKS/disk.img bs=4096 seek=$(( MARKER_OFF / 4096 )) conv=notrunc,sync 2>/dev/null
    result "{\"src\":\"dom0\",\"check\":\"syscalls\",\"guest\":\"twin\",\"disk\":\"$disk\",\"ok\":false,\"message\":\"serve runs under strace or gdb already (BLKBACK_XEN_STRACE, BLKBACK_XEN_DEBUG)\"}"
    wait_guest twin syscalls-done-$disk $(( 120 + 4 * SYSCALL_SECONDS ))
    return
  fi
  ctl "syscalls-list-$disk" list --json
  ctl "syscalls-before-$disk" stats --json
  strace -c -f -p "$SERVE_PID" -o /run/strace-$disk.txt 2> /run/strace-$disk.err &
  sp=$!
  for i in $(seq 1 60); do grep -q attached /run/strace-$disk.err 2>/dev/null && { attached=true; break; }; kill -0 $sp 2>/dev/null || break; sleep 1; done
  sleep 1   # strace says "attached" as it starts on the threads
  t0=$(cut -d' ' -f1 /proc/uptime)
  printf '%s' "$GO_TOKEN-$disk" | dd of=$DISKS/disk.img bs=4096 seek=$(( MARKER_OFF / 4096 )) conv=notrunc,sync 2>/dev/null
  phase "twin guest: go: the system-call job on $disk (strace attached to serve: $attached)"
  wait_guest twin syscalls-done-$disk $(( 300 + 4 * SYSCALL_SECONDS ))
  kill -INT $sp 2>/dev/null   # strace detaches and writes its summary
  for i in $(seq 1 60); do kill -0 $sp 2>/dev/null || break; sleep 1; done
  wait $sp; rc=$?
  t1=$(cut -d' ' -f1 /proc/uptime)
  ctl "syscalls-after-$disk" stats --json
  print_file "strace-$disk" /run/strace-$disk.txt
  print_file "strace-log-$disk" /run/strace-$disk.err
  # strace exits 130 when SIGINT stops it (128 + 2)
  result "{\"src\":\"dom0\",\"check\":\"syscalls\",\"guest\":\"twin\",\"disk\":\"$disk\",\"ok\":$($attached && echo true || echo false),\"attached\":$attached,\"strace_rc\":$rc,\"seconds\":$(echo "$t1 $t0" | awk '{print $1-$2}')}"
}
copy_disk() { # xvdd: a disk the frontend takes without persistent grants (the guest turned them off): grant copy
  wait_guest twin copy-ready 300 || return 1
  truncate -s 64M $DISKS/disk4.img && losetup /dev/loop3 $DISKS/disk4.img || die "losetup /dev/loop3 failed"
  phase "twin guest: blkback ctl attach xvdd (/dev/loop3; the frontend declines persistent grants)"
  node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS attach $DOMID format=raw,vdev=xvdd,access=rw,target=/dev/loop3 > /run/ctl-attach-xvdd.log 2>&1
  local rc=$?; print_file ctl-attach-xvdd /run/ctl-attach-xvdd.log
  result "{\"src\":\"dom0\",\"check\":\"ctl-attach-xvdd\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
  [ $rc = 0 ] && COPY_ATTACHED=1
}
COPY_ATTACHED=0
copy_disk_done() {
  [ $COPY_ATTACHED = 1 ] || return 0
  node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS detach $DOMID xvdd > /run/ctl-detach-xvdd.log 2>&1
  local rc=$?; print_file ctl-detach-xvdd /run/ctl-detach-xvdd.log
  result "{\"src\":\"dom0\",\"check\":\"ctl-detach-xvdd\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
}

if [ "$MODE" = same-guest ]; then
  # One PV guest, two disks: xvda from the kernel's xen-blkback (backend/vbd, made by xl create),
  # xvdb from blkback serve (backend/blkback, made by 'blkback ctl attach': xl knows only vbd and
  # qdisk). The guest runs each job on one disk, then the other, alternating which goes first
  # (kernel, ours, then ours, kernel, ...): the two backends compared seconds apart in one guest.
  phase "dom0: second backing file ${DISK_MIB} MiB of random data (xvdb, blkback serve's)"
  backing_file $DISKS/disk3.img "$DISK_MIB"
  if [ "$CHAIN" = iscsi ]; then
    iscsi_chain_up   # XVDA_DEV and XVDB_DEV: SCSI disks of Linux's initiator, LUNs of our target
    DISKSPEC="format=raw,vdev=xvda,access=rw,backendtype=phy,script=/etc/xen/scripts/block-fast,target=$XVDA_DEV"
  else
    losetup /dev/loop2 $DISKS/disk3.img || die "losetup /dev/loop2 failed"
    XVDB_DEV=/dev/loop2
  fi
  SERVE_ARGS="$SERVE_ARGS --backend-kind blkback"
  # the guest has TWIN_VCPUS vCPUs and Linux's blkfront asks for a queue (ring) per vCPU, up to the
  # backend's multi-queue-max-queues: xen-blkback's is dom0's vCPU count, serve's --max-queues
  [ -n "$SERVE_MAX_QUEUES" ] && SERVE_ARGS="$SERVE_ARGS --max-queues $SERVE_MAX_QUEUES"
  start_kernel_backend
  start_serve
  XVDC_ARG=; [ "$CHAIN" = iscsi ] && { XVDC_MARKER="BLKBACK-MARKER-xvdc-$RANDOM$RANDOM"; XVDC_ARG=bb_xvdc=$XVDC_MARKER; }
  GO_TOKEN="BLKBACK-GO-$RANDOM$RANDOM"
  VCPUS=$TWIN_VCPUS CAP=$TWIN_CAP
  if start_guest twin pv bb_role=twin bb_runs=$PAIRS $XVDC_ARG "bb_syscalls=${SYSCALLS// /,}" bb_syscall_seconds=$SYSCALL_SECONDS bb_go=$GO_TOKEN bb_marker_off=$MARKER_OFF; then
    xl sched-credit2 > /run/sched.txt 2>&1; print_file sched-credit2 /run/sched.txt   # the guest's cap, as Xen has it
    phase "twin guest: blkback ctl attach xvdb ($XVDB_DEV)"
    node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS attach $DOMID format=raw,vdev=xvdb,access=rw,target=$XVDB_DEV > /run/ctl-attach.log 2>&1
    rc=$?; print_file ctl-attach-twin /run/ctl-attach.log
    result "{\"src\":\"dom0\",\"check\":\"ctl-attach\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"rc\":$rc}"
    [ "$CHAIN" = iscsi ] && iscsi_direct_disk
    ctl ctl-list-twin list
    wait_guest twin pairs-done $(( 900 + 600 * PAIRS )) && {
      queues_check xvda 51712 vbd kernel
      queues_check xvdb 51728 blkback ours
      for p in $SYSCALLS; do
        case $p in
          persistent) syscall_window xvdb ;;
          copy) copy_disk && syscall_window xvdd ;;
        esac
      done
    }
    wait_guest twin checks-done 300
    ctl ctl-stats-twin stats --json
    copy_disk_done
    [ "$CHAIN" = iscsi ] && iscsi_direct_disk_done
    phase "twin guest: blkback ctl detach xvdb"
    node /opt/blkback/dist/src/cli/main.js ctl $CTL_ARGS detach $DOMID xvdb > /run/ctl-detach.log 2>&1
    rc=$?; print_file ctl-detach-twin /run/ctl-detach.log
    gone=true; xenstore-exists /local/domain/0/backend/blkback/$DOMID/51728 2>/dev/null && gone=false
    result "{\"src\":\"dom0\",\"check\":\"ctl-detach\",\"guest\":\"twin\",\"ok\":$([ $rc = 0 ] && $gone && echo true || echo false),\"rc\":$rc,\"backend_dir_gone\":$gone}"
    wait_guest twin xvdb-gone 120
    destroy_guest twin
  fi
  result "{\"src\":\"dom0\",\"check\":\"serve-alive\",\"ok\":$(serve_alive && echo true || echo false)}"
  [ "$CHAIN" = iscsi ] && iscsi_chain_down
  xl dmesg > /run/xl-dmesg.log 2>&1; print_file xl-dmesg /run/xl-dmesg.log
  finish
fi

if [ "$MODE" = paired ]; then
  # The two backends take turns in this one boot, a PV guest running the jobs once under each, in
  # the order kernel, ours, ours, kernel, kernel, ...: the comparison is then free of how fast the
  # emulator happens to run in a boot (the cost probe above varies by 1.7x between boots).
  # The first guest of a boot runs its jobs slower than the ones after it (the runs of --mode both
  # show it too): an uncounted warm-up turn goes first, under the kernel's backend.
  start_kernel_backend
  start_guest warmup pv bb_role=jobs bb_runs=1 && wait_guest warmup checks-done 900
  destroy_guest warmup
  stop_kernel_backend
  for i in $(seq 1 "$PAIRS"); do
    order="kernel ours"; [ $((i % 2)) = 0 ] && order="ours kernel"
    for b in $order; do
      if [ $b = kernel ]; then start_kernel_backend; else start_serve; fi
      start_guest $b-$i pv bb_role=jobs bb_runs=1 && wait_guest $b-$i checks-done 900
      destroy_guest $b-$i
      if [ $b = kernel ]; then stop_kernel_backend; else stop_serve; fi
    done
  done
  xl dmesg > /run/xl-dmesg.log 2>&1; print_file xl-dmesg /run/xl-dmesg.log
  finish
fi

for g in $GUESTS; do
  case $g in
    pv) full_guest pv pv 1 ;;
    pvh) full_guest pvh pvh 0 ;;
  esac
done

if [ "$MIDIO" = 1 ]; then
  # a guest destroyed while fio has requests in flight; then a new guest must still be served
  start_guest busy pv bb_role=busy && wait_guest busy busy-started 300 && sleep 5 && destroy_guest busy
  marker="BLKBACK-MARKER-after-$RANDOM$RANDOM"
  dom0_md5 after
  if start_guest after pv bb_role=quick bb_marker=$marker bb_marker_off=$MARKER_OFF; then
    wait_guest after marker-written 300 && marker_check after "$marker"
    wait_guest after checks-done 300
    [ "$MODE" = ours ] && ctl "ctl-list-after" list
    destroy_guest after
  fi
fi

if [ "$MODE" = ours ]; then
  result "{\"src\":\"dom0\",\"check\":\"serve-alive\",\"ok\":$(serve_alive && echo true || echo false)}"
  # where serve's CPU went over the whole run, thread by thread (clock ticks: name tid user system),
  # and how often each thread slept and woke (voluntary, then involuntary context switches)
  for t in /proc/$SERVE_PID/task/*; do
    echo "$(cat $t/comm 2>/dev/null | tr ' ' _) ${t##*/} $(awk '{print $14, $15}' $t/stat 2>/dev/null) $(awk '/ctxt_switches/ {printf "%s ", $2}' $t/status 2>/dev/null)"
  done > /run/serve-threads.txt
  # system calls that moved data (read-like, write-like) over the whole run, all threads
  grep -E '^sysc[rw]' /proc/$SERVE_PID/io >> /run/serve-threads.txt 2>/dev/null
  print_file serve-threads /run/serve-threads.txt
  kill $SERVE_PID 2>/dev/null; sleep 2
fi
xl dmesg > /run/xl-dmesg.log 2>&1; print_file xl-dmesg /run/xl-dmesg.log
if [ "$STRACE" = 1 ]; then
  for i in $(seq 1 60); do [ -s /run/strace.txt ] && break; sleep 1; done
  print_file serve-strace /run/strace.txt
fi
if [ "$PROFILE" = 1 ]; then
  # serve writes its profile as it exits (SIGTERM above): wait for it, then print the profile's top
  for i in $(seq 1 120); do serve_alive || break; sleep 1; done
  node /opt/blkback-test/profile-top.js --top 60 /run/prof/*.cpuprofile > /run/prof-top.txt 2>&1
  print_file serve-profile /run/prof-top.txt
fi
finish
