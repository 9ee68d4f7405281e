#!/bin/sh
# vm5k "debian" guest, early boot (vm5k-seed.service, before the network and sshd): cloud-init seed,
# host name, keys, files, DNS wishes for systemd-resolved, SSH host keys on a new instance.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /usr/lib/vm5k/seed-lib.sh
seed_log "boot started uptime=$(uptime_seconds)"
load_modules late # a debian boot takes tens of seconds anyway; logind handles the power button
seed_early
if [ -s "$VM5K_RUN/resolv.conf.seed" ]; then
	mkdir -p /etc/systemd/resolved.conf.d
	{
		echo "[Resolve]"
		echo "DNS=$(awk '$1 == "nameserver" { printf "%s ", $2 }' "$VM5K_RUN/resolv.conf.seed")"
		echo "Domains=$(awk '$1 == "search" || $1 == "domain" { $1 = ""; printf "%s ", $0 }' "$VM5K_RUN/resolv.conf.seed")"
	} > /etc/systemd/resolved.conf.d/vm5k-seed.conf
fi
if [ "$SEED_NEW_INSTANCE" = yes ] || [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
	rm -f /etc/ssh/ssh_host_*
	ssh-keygen -q -t ed25519 -N "" -C "root@$SEED_HOSTNAME" -f /etc/ssh/ssh_host_ed25519_key
	ssh-keygen -q -t ecdsa -N "" -C "root@$SEED_HOSTNAME" -f /etc/ssh/ssh_host_ecdsa_key
	seed_log "new instance $SEED_INSTANCE: SSH host keys generated"
fi
for kind in ed25519 ecdsa; do
	awk -v h="root@$SEED_HOSTNAME" '{ print $1, $2, h }' "/etc/ssh/ssh_host_${kind}_key.pub"
done > "$VM5K_RUN/host-keys.pub"
seed_print_host_keys "$VM5K_RUN/host-keys.pub"
{
	echo "SEED_INSTANCE='$SEED_INSTANCE'"
	echo "SEED_NEW_INSTANCE=$SEED_NEW_INSTANCE"
	echo "SEED_HOSTNAME='$SEED_HOSTNAME'"
} > "$VM5K_RUN/seed.env"
exit 0
