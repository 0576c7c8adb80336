#!/bin/busybox sh
# A guest's /init for the Xen-under-QEMU harness (busybox, xen-blkfront.ko, fio; see docs/xen-tcg.md).
# Its role and parameters come on the kernel command line from dom0 (bb_role, bb_tag, bb_marker, ...).
# It reports on its console (hvc0), which dom0 relays: BLKBACK-RESULT {json}, BLKBACK-PHASE text,
# BLKBACK-GUEST <word> for dom0 to wait on, BLKBACK-FILE-BEGIN/END around fio's JSON and bw logs.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmpfs /tmp

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
ROLE=$(arg bb_role); TAG=$(arg bb_tag); MARKER=$(arg bb_marker); MARKER_OFF=$(arg bb_marker_off); HOTPLUG=$(arg bb_hotplug)
RUNS=$(arg bb_runs); [ -n "$RUNS" ] || RUNS=1   # runs of each fio job (the seed's mail made three)
# --mode same-guest: serve's system calls counted during short jobs (persistent: on xvdb; copy: on
# xvdd, attached after the guest turns persistent grants off), each started by dom0's go-flag
SYSCALLS=$(arg bb_syscalls | tr ',' ' '); SYSCALL_SECONDS=$(arg bb_syscall_seconds); GO=$(arg bb_go)
up() { cut -d' ' -f1 /proc/uptime; }
phase() { echo "BLKBACK-PHASE $TAG guest: $*"; }
result() { echo "BLKBACK-RESULT {\"src\":\"guest\",\"guest\":\"$TAG\",$1}"; }
said() { echo "BLKBACK-GUEST $1"; }
okf() { [ "$1" = 0 ] && echo true || echo false; }
print_file() { echo "BLKBACK-FILE-BEGIN $1"; cat "$2"; echo; echo "BLKBACK-FILE-END $1"; }
hold() { said holding; while true; do sleep 3600; done; }
wait_dev() { # DEV SECONDS PRESENT(1|0)
  i=0; while [ $i -lt "$2" ]; do
    if [ "$3" = 1 ]; then [ -b "$1" ] && return 0; else [ -b "$1" ] || return 0; fi
    sleep 1; i=$((i + 1))
  done; return 1
}

phase "booted ($ROLE) at $(up)s"
insmod /lib/modules/xen-blkfront.ko || result "\"check\":\"blkfront\",\"ok\":false"
if ! wait_dev /dev/xvda 120 1; then result "\"check\":\"xvda\",\"ok\":false"; said checks-done; hold; fi

size_check() {
  result "\"check\":\"size\",\"ok\":true,\"bytes\":$(( $(cat /sys/block/xvda/size) * 512 )),\"write_cache\":\"$(cat /sys/block/xvda/queue/write_cache)\""
}
read_check() { # full read, checksum to compare with dom0's md5 of the backing file
  phase "full read of /dev/xvda"
  t0=$(up); sum=$(md5sum /dev/xvda | cut -d' ' -f1); t1=$(up)
  result "\"check\":\"read\",\"ok\":true,\"md5\":\"$sum\",\"seconds\":$(echo "$t0 $t1" | awk '{print $2-$1}')"
}
marker_write() { # a write that must be in the backing file once fsync returns
  [ -n "$MARKER" ] || MARKER=$(arg bb_marker)   # once seen empty after a segfault under TCG
  [ -n "$MARKER" ] || { result "\"check\":\"fsync-write\",\"ok\":false,\"message\":\"no bb_marker\""; said marker-written; return; }
  printf '%s' "$MARKER" | dd of=/dev/xvda bs=4096 seek=$((MARKER_OFF / 4096)) conv=notrunc,sync,fsync 2>/tmp/dd.err
  rc=$?; result "\"check\":\"fsync-write\",\"ok\":$(okf $rc),\"rc\":$rc"
  said marker-written
}
flush_check() { # fsync on an idle block device sends the backend a flush (blkdev_issue_flush)
  sync /dev/xvda; rc=$?
  result "\"check\":\"flush\",\"ok\":$(okf $rc),\"rc\":$rc,\"write_cache\":\"$(cat /sys/block/xvda/queue/write_cache)\""
}
run_fio() { # JOB RUN [JOBDIR]: files and results carry the run number; the phase names it when there are several
  name="fio $1"; [ "$RUNS" -gt 1 ] && name="fio $1 run $2/$RUNS"
  jobs=${3:-/jobs}
  phase "$name ($(grep -c . $jobs/$1.fio) lines, $(sed -n 's/^numjobs=//p' $jobs/$1.fio) jobs, $(sed -n 's/^filename=//p' $jobs/$1.fio))"
  dir=/tmp/$1-$2; mkdir -p $dir && cd $dir
  t0=$(up); fio --output-format=json --output=$dir.json $jobs/$1.fio > $dir.err 2>&1; rc=$?; t1=$(up)
  cd /
  result "\"check\":\"fio\",\"job\":\"$1\",\"run\":$2,\"ok\":$(okf $rc),\"rc\":$rc,\"seconds\":$(echo "$t0 $t1" | awk '{print $2-$1}')"
  [ -s $dir.err ] && print_file "fio-stderr-$TAG-$1-$2" $dir.err
  print_file "fio-json-$TAG-$1-$2" $dir.json
  for f in $dir/*_bw.*.log; do [ -f "$f" ] && print_file "bwlog-$TAG-$1-$2-${f##*/}" "$f"; done
  rm -rf $dir $dir.json $dir.err   # the guest's /tmp is RAM
  phase "$name done rc=$rc"
}
go_wait() { # TOKEN SECONDS: until dom0 writes TOKEN at MARKER_OFF of xvda (the kernel's disk: these reads never reach serve)
  i=0; n=$(( $2 * 2 ))
  while [ $i -lt $n ]; do
    [ "$(dd if=/dev/xvda bs=4096 skip=$((MARKER_OFF / 4096)) count=1 iflag=direct 2>/dev/null | head -c ${#1})" = "$1" ] && return 0
    sleep 0.5; i=$((i + 1))
  done; return 1
}
syscall_job() { # DISK: 4 KiB random reads, then writes, at queue depth 32, SECS seconds each, while dom0 counts serve's system calls
  d=$1; f=/tmp/syscalls-$d.fio
  printf '%s\n' '[global]' "filename=/dev/$d" 'ioengine=libaio' 'direct=1' 'bs=4k' 'iodepth=32' 'size=32m' \
    'time_based' "runtime=$SYSCALL_SECONDS" 'norandommap' 'randrepeat=0' '[randread]' 'rw=randread' '[randwrite]' 'stonewall' 'rw=randwrite' > $f
  said syscalls-ready-$d
  if ! go_wait "$GO-$d" 900; then
    result "\"check\":\"syscalls-fio\",\"disk\":\"$d\",\"ok\":false,\"message\":\"no go from dom0 within 900 s\""; said syscalls-done-$d; return
  fi
  phase "fio syscalls on $d (4k randread then randwrite, iodepth 32, ${SYSCALL_SECONDS} s each; serve under strace)"
  t0=$(up); fio --output-format=json --output=/tmp/syscalls-$d.json $f > /tmp/syscalls-$d.err 2>&1; rc=$?; t1=$(up)
  said syscalls-done-$d
  result "\"check\":\"syscalls-fio\",\"disk\":\"$d\",\"ok\":$(okf $rc),\"rc\":$rc,\"seconds\":$(echo "$t0 $t1" | awk '{print $2-$1}')"
  [ -s /tmp/syscalls-$d.err ] && print_file "fio-stderr-syscalls-$d" /tmp/syscalls-$d.err
  print_file "fio-json-syscalls-$d" /tmp/syscalls-$d.json
}
hotplug() { # dom0 attaches xvdb, we read it whole, dom0 detaches it
  said hotplug-ready
  if wait_dev /dev/xvdb 180 1; then
    result "\"check\":\"hotplug-read\",\"ok\":true,\"bytes\":$(( $(cat /sys/block/xvdb/size) * 512 )),\"md5\":\"$(md5sum /dev/xvdb | cut -d' ' -f1)\""
  else
    result "\"check\":\"hotplug-read\",\"ok\":false"
  fi
  said hotplug-seen
  wait_dev /dev/xvdb 180 0; rc=$?
  result "\"check\":\"hotplug-gone\",\"ok\":$(okf $rc)"
  said hotplug-gone
}

case "$ROLE" in
  checks)
    size_check; read_check; marker_write; flush_check
    n=0; r=1
    while [ $r -le "$RUNS" ]; do
      for f in /jobs/*.fio; do
        [ -f "$f" ] || continue
        job=${f##*/}; run_fio "${job%.fio}" $r; n=$((n + 1))
      done
      r=$((r + 1))
    done
    [ $n -gt 0 ] || result "\"check\":\"fio\",\"job\":\"none\",\"ok\":false,\"message\":\"no job files in /jobs: $(ls -la / /jobs 2>&1 | tr '\n' ' ')\"" 
    said checks-done
    [ "$HOTPLUG" = 1 ] && hotplug ;;
  jobs)  # the fio jobs only (--mode paired: the two backends take turns in one boot)
    r=1
    while [ $r -le "$RUNS" ]; do
      for f in /jobs/*.fio; do [ -f "$f" ] && { job=${f##*/}; run_fio "${job%.fio}" $r; }; done
      r=$((r + 1))
    done
    said checks-done ;;
  twin)  # --mode same-guest: xvda is the kernel's backend's, xvdb blkback serve's (dom0 attaches it
    # after boot). Each job runs on one disk, then on the other, the order alternating (kernel
    # first, then ours first, ...), RUNS pairs of each; results and files are tagged kernel-N and
    # ours-N as if from guests of those names. A warm-up run of each job on each disk goes first,
    # uncounted (the first runs in a guest are slower; serve's JavaScript compiles as it runs).
    if ! wait_dev /dev/xvdb 300 1; then result "\"check\":\"xvdb\",\"ok\":false"; said checks-done; hold; fi
    result "\"check\":\"xvdb\",\"ok\":true,\"bytes\":$(( $(cat /sys/block/xvdb/size) * 512 )),\"write_cache\":\"$(cat /sys/block/xvdb/queue/write_cache)\""
    XVDC=$(arg bb_xvdc)   # --chain iscsi: dom0 also attaches xvdc, blkback serve's iscsi:// disk
    if [ -n "$XVDC" ]; then
      if wait_dev /dev/xvdc 300 1; then
        bytes=$(( $(cat /sys/block/xvdc/size) * 512 ))
        result "\"check\":\"xvdc-read\",\"ok\":true,\"bytes\":$bytes,\"md5\":\"$(md5sum /dev/xvdc | cut -d' ' -f1)\""
        printf '%s' "$XVDC" | dd of=/dev/xvdc bs=4096 seek=$(( (bytes - 65536) / 4096 )) conv=notrunc,sync,fsync 2>/tmp/dd.err
        rc=$?; result "\"check\":\"xvdc-fsync-write\",\"ok\":$(okf $rc),\"rc\":$rc"
      else
        result "\"check\":\"xvdc-read\",\"ok\":false"
      fi
    fi
    mkdir -p /jobs-xvdb
    for f in /jobs/*.fio; do sed 's#/dev/xvda#/dev/xvdb#g' "$f" > /jobs-xvdb/${f##*/}; done
    PAIRS=$RUNS; RUNS=1; GUEST_TAG=$TAG
    on() { # LABEL JOBDIR JOB: one run, reported under LABEL
      TAG=$1; run_fio $3 1 $2; TAG=$GUEST_TAG
    }
    for f in /jobs/*.fio; do job=${f##*/}; on warmup-kernel /jobs ${job%.fio}; on warmup-ours /jobs-xvdb ${job%.fio}; done
    p=1
    while [ $p -le "$PAIRS" ]; do
      for f in /jobs/*.fio; do
        job=${f##*/}; job=${job%.fio}
        if [ $((p % 2)) = 1 ]; then on kernel-$p /jobs $job; on ours-$p /jobs-xvdb $job
        else on ours-$p /jobs-xvdb $job; on kernel-$p /jobs $job; fi
      done
      p=$((p + 1))
    done
    said pairs-done
    for s in $SYSCALLS; do
      case $s in
        persistent) syscall_job xvdb ;;
        copy)  # Linux's blkfront reads feature_persistent as it connects a disk: xvdd goes without
          echo 0 > /sys/module/xen_blkfront/parameters/feature_persistent
          said copy-ready
          if wait_dev /dev/xvdd 300 1; then
            result "\"check\":\"xvdd\",\"ok\":true,\"feature_persistent\":\"$(cat /sys/module/xen_blkfront/parameters/feature_persistent)\""
            syscall_job xvdd
          else
            result "\"check\":\"xvdd\",\"ok\":false"
          fi
          echo 1 > /sys/module/xen_blkfront/parameters/feature_persistent ;;
      esac
    done
    said checks-done
    wait_dev /dev/xvdb 180 0; rc=$?   # dom0 detaches xvdb ('blkback ctl detach')
    result "\"check\":\"xvdb-gone\",\"ok\":$(okf $rc)"
    said xvdb-gone ;;
  quick)
    size_check; read_check; marker_write; flush_check; said checks-done ;;
  busy)  # writes until dom0 destroys us
    cd /tmp && fio --name=busy --filename=/dev/xvda --rw=randwrite --bs=64k --iodepth=32 --ioengine=libaio \
      --direct=1 --size=64m --time_based --runtime=900 > /tmp/busy.out 2>&1 &
    sleep 3; phase "fio busy writing"; said busy-started ;;
esac
hold
