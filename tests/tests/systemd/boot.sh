#!/bin/bash
# Boots a private systemd as PID 1 of new pid, mount, uts and cgroup namespaces (started in the
# test lab's network namespace), on an overlay of / whose writes go to a tmpfs: nothing that
# systemd or the service writes reaches the host's files. Units that act on the kernel
# whatever the file system (sysctl, modules, binfmt, ...) are masked; the unit under test is
# installed as docs/operations.md says.
# Usage: boot.sh UNIT CONFIG BINARY [DROP-IN...] (run by tests/tests/systemd.rs under `unshare`)
set -euo pipefail
unit=$1 config=$2 bin=$3
shift 3
mount --make-rprivate /
T=/mnt
mount -t tmpfs -o mode=755 capsd "$T"
mkdir -p "$T"/upper "$T"/work "$T"/root
mount -t overlay overlay -o lowerdir=/,upperdir="$T"/upper,workdir="$T"/work "$T"/root
R="$T"/root
mount -t proc proc "$R"/proc
mount -t sysfs -o ro sysfs "$R"/sys
mount -t tmpfs -o mode=755 run "$R"/run
mount -t tmpfs -o mode=755 dev "$R"/dev
# kmsg: a device of the host's that the service's PrivateDevices must hide.
for n in null zero full random urandom tty kmsg; do
    touch "$R"/dev/$n
    mount --bind /dev/$n "$R"/dev/$n
done
mkdir -p "$R"/dev/pts "$R"/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R"/dev/pts
ln -s pts/ptmx "$R"/dev/ptmx

# The installation, as docs/operations.md describes it.
install -m 0755 "$bin" "$R"/usr/local/bin/capture-daemon
install -d -m 0755 "$R"/etc/capture-daemon
install -m 0644 "$config" "$R"/etc/capture-daemon/capture.toml
install -m 0644 "$unit" "$R"/etc/systemd/system/capture-daemon.service
grep -q '^capture-daemon:' "$R"/etc/passwd ||
    echo 'capture-daemon:x:990:990::/nonexistent:/usr/sbin/nologin' >>"$R"/etc/passwd
grep -q '^capture-daemon:' "$R"/etc/group || echo 'capture-daemon:x:990:' >>"$R"/etc/group

# The test's drop-ins: no early-boot units, output to a file systemd opens, no restarts.
install -d "$R"/etc/systemd/system/capture-daemon.service.d
printf '[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:/run/daemon.log\nStandardError=append:/run/daemon.log\nRestart=no\n' \
    >"$R"/etc/systemd/system/capture-daemon.service.d/test.conf
for d in "$@"; do
    install -m 0644 "$d" "$R"/etc/systemd/system/capture-daemon.service.d/
done
for u in sysinit.target timers.target systemd-sysctl.service systemd-modules-load.service \
    systemd-remount-fs.service systemd-tmpfiles-setup-dev.service kmod-static-nodes.service \
    systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-random-seed.service \
    sys-kernel-config.mount systemd-repart.service systemd-firstboot.service \
    systemd-timesyncd.service systemd-pstore.service; do
    ln -sf /dev/null "$R"/etc/systemd/system/$u
done
printf '[Unit]\nDescription=capture-daemon sandbox test\nDefaultDependencies=no\n' \
    >"$R"/etc/systemd/system/capsd-test.target

cd "$R"
mkdir -p old
pivot_root . old
umount -l /old
exec env -i container=capture-daemon-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --system --unit=capsd-test.target --log-target=console --log-level=notice
