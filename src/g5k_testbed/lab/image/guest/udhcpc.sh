#!/bin/sh
# udhcpc event handler of the vm5k guests: address, default route, DNS (unless the seed set it).
[ -n "$1" ] || exit 1
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	prefix=${mask:-24}
	if ! ip -4 addr show dev "$interface" | grep -q "inet $ip/$prefix "; then
		ip -4 addr flush dev "$interface"
		ip addr add "$ip/$prefix" ${broadcast:+broadcast "$broadcast"} dev "$interface"
	fi
	if [ -n "$router" ]; then
		set -- $router
		ip route replace default via "$1" dev "$interface"
	fi
	mkdir -p /run/vm5k
	echo "$ip" > /run/vm5k/ip
	if [ -s /run/vm5k/resolv.conf.seed ]; then
		cp /run/vm5k/resolv.conf.seed /etc/resolv.conf
	else
		{
			[ -n "$search" ] && echo "search $search" || { [ -n "$domain" ] && echo "search $domain"; }
			for server in $dns; do echo "nameserver $server"; done
		} > /etc/resolv.conf
	fi
	;;
esac
exit 0
