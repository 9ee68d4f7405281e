#!/bin/sh
# vm5k "tiny" guest boot (busybox init's sysinit): mounts, cloud-init seed, host keys on a new instance,
# DHCP (sending the host name), dropbear, readiness markers, then deferred files and runcmd.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw /
ip link set lo up

. /usr/lib/vm5k/seed-lib.sh
seed_log "boot started uptime=$(uptime_seconds)"
seed_early
acpid -c /etc/acpi # the power button's module came with the seed's: `virsh shutdown` works from now on

# DHCP starts now and runs while the host keys are generated (both take a while under TCG).
ip link set eth0 up
udhcpc -i eth0 -s /usr/lib/vm5k/udhcpc.script -x "hostname:$SEED_HOSTNAME" -F "${SEED_FQDN:-$SEED_HOSTNAME}" \
	-t 20 -T 1 -A 3 -b -p /run/udhcpc.eth0.pid > /dev/null 2>&1 &
dhcp=$!

if [ "$SEED_NEW_INSTANCE" = yes ] || [ ! -s /etc/dropbear/dropbear_ed25519_host_key ]; then
	rm -f /etc/dropbear/dropbear_*_host_key
	dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key > /dev/null 2>&1
	seed_log "new instance $SEED_INSTANCE: SSH host keys generated"
fi
# ed25519 only: an ECDSA key costs another half second of TCG time, and every client speaks ed25519.
dropbearkey -y -f /etc/dropbear/dropbear_ed25519_host_key 2> /dev/null | grep '^ssh-' |
	sed "s/ [^ ]*\$/ root@$SEED_HOSTNAME/" > /run/vm5k/host-keys.pub
seed_print_host_keys /run/vm5k/host-keys.pub

wait "$dhcp" # udhcpc -b returns once it holds a lease (it goes on renewing it in the background)
ip=$(cat /run/vm5k/ip 2> /dev/null)
seed_log "network ${ip:+up }uptime=$(uptime_seconds) ip=${ip:-none}"

dropbear -s -p 22 -P /run/dropbear.pid -r /etc/dropbear/dropbear_ed25519_host_key
started=$(uptime_seconds)
echo "$started" > /run/vm5k/sshd-started
seed_log "sshd up uptime=$started ip=${ip:-none} hostname=$SEED_HOSTNAME"

{
	load_modules late
	seed_late
} > /var/log/vm5k-late.log 2>&1 &
