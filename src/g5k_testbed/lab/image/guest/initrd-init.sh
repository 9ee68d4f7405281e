#!/bin/busybox sh
# vm5k guest initrd: load the drivers the guest needs (disks, cdrom, filesystems, network), then mount
# the root filesystem named by root= (a device, LABEL= or UUID=) and switch to its init (init=, default
# /sbin/init). With vm5k.canary on the command line it only proves the kernel runs, then powers off.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin

say() { echo "vm5k-initrd: $*" > /dev/console; }
halt_with() { say "$*"; sleep 2; poweroff -f; }

root=""
init=/sbin/init
mode=rw
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	init=*) init=${arg#init=} ;;
	ro) mode=ro ;;
	vm5k.canary) echo "vm5k-canary: ok" > /dev/console; poweroff -f ;;
	esac
done

while read -r module; do
	insmod "/lib/modules/$module" 2> /dev/null
done < /lib/modules/load-order

[ -n "$root" ] || halt_with "no root= on the kernel command line"
tries=0
while :; do
	case "$root" in
	LABEL=* | UUID=*) dev=$(findfs "$root" 2> /dev/null) ;;
	*) dev=$root ;;
	esac
	[ -n "$dev" ] && [ -b "$dev" ] && break
	tries=$((tries + 1))
	[ $tries -gt 200 ] && halt_with "root filesystem $root not found"
	sleep 0.05
done
mount -t ext4 -o "$mode" "$dev" /newroot || halt_with "cannot mount $dev"
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
