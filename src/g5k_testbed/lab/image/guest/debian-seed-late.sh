#!/bin/sh
# vm5k "debian" guest, once sshd runs and the network is online (vm5k-ready.service): readiness markers,
# then deferred files, runcmd and a user script on a new instance.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /usr/lib/vm5k/seed-lib.sh
. "$VM5K_RUN/seed.env"
ip=""
tries=0
while [ -z "$ip" ] && [ $tries -lt 60 ]; do
	ip=$(ip -4 -o addr show scope global | awk '{ split($4, a, "/"); print a[1]; exit }')
	[ -n "$ip" ] || sleep 0.5
	tries=$((tries + 1))
done
echo "${ip:-none}" > "$VM5K_RUN/ip"
started=$(uptime_seconds)
echo "$started" > "$VM5K_RUN/sshd-started"
seed_log "sshd up uptime=$started ip=${ip:-none} hostname=$SEED_HOSTNAME"
seed_late > /var/log/vm5k-late.log 2>&1
exit 0
