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

if [ "$SEED_NEW_INSTANCE" = yes ] || [ ! -s /etc/dropbear/dropbear_ed25519_host_key ]; then
	rm -f /etc/dropbear/dropbear_*_host_key
	dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key > /dev/null 2>&1
	dropbearkey -t ecdsa -s 256 -f /etc/dropbear/dropbear_ecdsa_host_key > /dev/null 2>&1
	seed_log "new instance $SEED_INSTANCE: SSH host keys generated"
fi
for kind in ed25519 ecdsa; do
	dropbearkey -y -f "/etc/dropbear/dropbear_${kind}_host_key" 2> /dev/null | grep -E '^(ssh|ecdsa)-' |
		sed "s/ [^ ]*\$/ root@$SEED_HOSTNAME/"
done > /run/vm5k/host-keys.pub
seed_print_host_keys /run/vm5k/host-keys.pub

ip link set eth0 up
udhcpc -i eth0 -s /usr/lib/vm5k/udhcpc.script -x "hostname:$SEED_HOSTNAME" -F "${SEED_FQDN:-$SEED_HOSTNAME}" \
	-t 20 -T 1 -A 3 -b -S -p /run/udhcpc.eth0.pid > /dev/null 2>&1
ip=$(cat /run/vm5k/ip 2> /dev/null)
seed_log "network ${ip:+up }uptime=$(uptime_seconds) ip=${ip:-none}"

dropbear -s -p 22 -P /run/dropbear.pid -r /etc/dropbear/dropbear_ed25519_host_key \
	-r /etc/dropbear/dropbear_ecdsa_host_key
started=$(uptime_seconds)
echo "$started" > /run/vm5k/sshd-started
seed_log "sshd up uptime=$started ip=${ip:-none} hostname=$SEED_HOSTNAME"

acpid -c /etc/acpi 2> /dev/null
seed_late > /var/log/vm5k-late.log 2>&1 &
