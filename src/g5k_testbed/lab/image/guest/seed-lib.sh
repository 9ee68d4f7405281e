# vm5k guest: read a cloud-init NoCloud seed (a filesystem labelled "cidata") and apply what it asks.
# Sourced by the boot script of each flavour (busybox sh in "tiny", dash in "debian"). POSIX sh only.
#
# Supported (see docs/guest-images.md): meta-data instance-id, local-hostname, hostname, public-keys;
# user-data "#cloud-config" keys hostname, fqdn, ssh_authorized_keys, users[].ssh_authorized_keys (root
# or default), write_files (path, content, encoding text|b64|gz+b64, permissions, owner, append, defer),
# bootcmd (every boot), runcmd (once per instance), resolv_conf/manage_resolv_conf; a user-data that is a
# "#!" script runs once per instance. Everything else is ignored.

VM5K_RUN=/run/vm5k
SEED_DIR=$VM5K_RUN/seed
VM5K_STATE=/var/lib/vm5k
SEED_PARSE=/usr/lib/vm5k/seed-parse

seed_log() {
	echo "vm5k-guest: $*" > /dev/console 2> /dev/null || echo "vm5k-guest: $*"
}

uptime_seconds() {
	cut -d' ' -f1 /proc/uptime
}

# Load a group of kernel modules the initrd left to the root (/lib/modules/vm5k/<group>.order), once.
load_modules() {
	[ -f "/lib/modules/vm5k/$1.order" ] || return 0
	[ -e "$VM5K_RUN/modules-$1" ] && return 0
	command -v insmod > /dev/null || {
		seed_log "no insmod: the $1 modules cannot be loaded"
		return 1
	}
	mkdir -p "$VM5K_RUN" && : > "$VM5K_RUN/modules-$1"
	while read -r _module; do
		insmod "/lib/modules/vm5k/$_module" 2> /dev/null
	done < "/lib/modules/vm5k/$1.order"
}

# The raw (still escaped) value of PATH in a flattened file; fails when absent.
seed_raw() {
	awk -F '\t' -v key="$2" 'BEGIN { found = 1 } $1 == key { print substr($0, length(key) + 2); found = 0; exit } END { exit found }' "$1"
}

# The value of PATH, unescaped (trailing newlines are lost: use seed_write for file contents).
seed_get() {
	_raw=$(seed_raw "$1" "$2") || return 1
	printf '%b' "$_raw"
}

seed_has() {
	awk -F '\t' -v p="$2" 'BEGIN { found = 1 } $1 == p || index($1, p ".") == 1 { found = 0; exit } END { exit found }' "$1"
}

seed_true() {
	case "$(seed_get "$1" "$2" 2> /dev/null)" in
	true | True | TRUE | yes | Yes | on | 1) return 0 ;;
	*) return 1 ;;
	esac
}

seed_find_device() {
	for _label in cidata CIDATA; do
		_dev=$(findfs "LABEL=$_label" 2> /dev/null) && [ -n "$_dev" ] && {
			echo "$_dev"
			return 0
		}
	done
	return 1
}

# Copy the seed's files to $SEED_DIR and flatten them (meta.vars, user.vars).
seed_load() {
	mkdir -p "$SEED_DIR/mnt" "$VM5K_STATE"
	: > "$SEED_DIR/meta.vars"
	: > "$SEED_DIR/user.vars"
	load_modules seed
	_tries=0
	_dev=$(seed_find_device)
	if [ -z "$_dev" ]; then
		load_modules late # the seed may be on a SATA CD-ROM, which appears a moment after its driver
	fi
	while [ -z "$_dev" ] && [ $_tries -lt 30 ]; do
		sleep 0.2
		_tries=$((_tries + 1))
		_dev=$(seed_find_device)
	done
	if [ -z "$_dev" ]; then
		seed_log "no cidata seed found"
		return 1
	fi
	mount -o ro "$_dev" "$SEED_DIR/mnt" 2> /dev/null || { load_modules late && mount -o ro "$_dev" "$SEED_DIR/mnt"; } ||
		mount -t vfat -o ro "$_dev" "$SEED_DIR/mnt" || {
		seed_log "cannot mount the seed $_dev"
		return 1
	}
	for _f in meta-data user-data vendor-data network-config; do
		[ -f "$SEED_DIR/mnt/$_f" ] && cp "$SEED_DIR/mnt/$_f" "$SEED_DIR/$_f"
	done
	umount "$SEED_DIR/mnt"
	[ -f "$SEED_DIR/meta-data" ] && sh "$SEED_PARSE" "$SEED_DIR/meta-data" > "$SEED_DIR/meta.vars"
	if [ -f "$SEED_DIR/user-data" ]; then
		case "$(head -n 1 "$SEED_DIR/user-data")" in
		"#cloud-config"*) sh "$SEED_PARSE" "$SEED_DIR/user-data" > "$SEED_DIR/user.vars" ;;
		"#!"*) cp "$SEED_DIR/user-data" "$SEED_DIR/user-script" && chmod 700 "$SEED_DIR/user-script" ;;
		*) seed_log "user-data is neither #cloud-config nor a script: ignored" ;;
		esac
	fi
	return 0
}

# instance-id of the seed; "new" when it differs from the last boot's (first boot of this VM).
seed_instance() {
	SEED_INSTANCE=$(seed_get "$SEED_DIR/meta.vars" instance-id 2> /dev/null)
	[ -n "$SEED_INSTANCE" ] || SEED_INSTANCE=iid-vm5k-default
	if [ "$(cat "$VM5K_STATE/instance-id" 2> /dev/null)" = "$SEED_INSTANCE" ]; then
		SEED_NEW_INSTANCE=no
	else
		SEED_NEW_INSTANCE=yes
	fi
}

seed_instance_done() {
	echo "$SEED_INSTANCE" > "$VM5K_STATE/instance-id"
}

# The host name to use: user-data fqdn/hostname, then meta-data local-hostname/hostname.
seed_hostname() {
	SEED_FQDN=$(seed_get "$SEED_DIR/user.vars" fqdn 2> /dev/null)
	SEED_HOSTNAME=$(seed_get "$SEED_DIR/user.vars" hostname 2> /dev/null)
	[ -n "$SEED_HOSTNAME" ] || SEED_HOSTNAME=$(seed_get "$SEED_DIR/meta.vars" local-hostname 2> /dev/null)
	[ -n "$SEED_HOSTNAME" ] || SEED_HOSTNAME=$(seed_get "$SEED_DIR/meta.vars" hostname 2> /dev/null)
	[ -n "$SEED_HOSTNAME" ] || SEED_HOSTNAME=${SEED_FQDN%%.*}
	[ -n "$SEED_HOSTNAME" ] || SEED_HOSTNAME=vm5k-guest
	case "$SEED_HOSTNAME" in *.*)
		[ -n "$SEED_FQDN" ] || SEED_FQDN=$SEED_HOSTNAME
		SEED_HOSTNAME=${SEED_HOSTNAME%%.*}
		;;
	esac
	hostname "$SEED_HOSTNAME"
	echo "$SEED_HOSTNAME" > /etc/hostname
	if [ -n "$SEED_FQDN" ] && [ "$SEED_FQDN" != "$SEED_HOSTNAME" ]; then
		_names="$SEED_FQDN $SEED_HOSTNAME"
	else
		_names=$SEED_HOSTNAME
	fi
	printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$_names" > /etc/hosts
}

# Every value of a list PATH.0, PATH.1, ... in order, one per line (for one-line values such as keys).
# One awk pass (each process costs tens of milliseconds under TCG).
seed_list() {
	awk -F '\t' -v p="$2" '
		index($1, p ".") == 1 && substr($1, length(p) + 2) ~ /^[0-9]+$/ {
			v = substr($0, length($1) + 2); out = ""
			for (k = 1; k <= length(v); k++) {
				c = substr(v, k, 1)
				if (c == "\\" && k < length(v)) { k++; c = substr(v, k, 1); c = c == "n" ? " " : c == "t" ? " " : c }
				out = out c
			}
			items[substr($1, length(p) + 2) + 0] = out; if (substr($1, length(p) + 2) + 0 > n) n = substr($1, length(p) + 2) + 0; found = 1
		}
		END { if (found) for (i = 0; i <= n; i++) if (i in items) print items[i] }' "$1"
}

# Keys for root: meta-data public-keys, user-data ssh_authorized_keys, and those of users root/default.
seed_authorized_keys() {
	mkdir -p /root/.ssh
	chmod 700 /root /root/.ssh
	{
		[ "$SEED_NEW_INSTANCE" = no ] && cat /root/.ssh/authorized_keys 2> /dev/null
		seed_list "$SEED_DIR/meta.vars" public-keys
		seed_list "$SEED_DIR/user.vars" ssh_authorized_keys
		for _u in $(awk -F '\t' '$1 ~ /^users\.[0-9]+(\.name)?$/ && ($2 == "root" || $2 == "default") {
				split($1, a, "."); print a[2] }' "$SEED_DIR/user.vars"); do
			seed_list "$SEED_DIR/user.vars" "users.$_u.ssh_authorized_keys"
		done
	} | awk 'NF && !seen[$0]++' > /root/.ssh/authorized_keys.new
	mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
	chmod 600 /root/.ssh/authorized_keys
}

# write_files entries whose "defer" is $1 (false: before the network, true: before runcmd).
seed_write_files() {
	_i=0
	while _path=$(seed_get "$SEED_DIR/user.vars" "write_files.$_i.path" 2> /dev/null); do
		_n=$_i
		_i=$((_i + 1))
		_defer=false
		seed_true "$SEED_DIR/user.vars" "write_files.$_n.defer" && _defer=true
		[ "$_defer" = "$1" ] || continue
		mkdir -p "$(dirname "$_path")"
		_raw=$(seed_raw "$SEED_DIR/user.vars" "write_files.$_n.content" 2> /dev/null)
		_enc=$(seed_get "$SEED_DIR/user.vars" "write_files.$_n.encoding" 2> /dev/null)
		_redir=">"
		seed_true "$SEED_DIR/user.vars" "write_files.$_n.append" && _redir=">>"
		case "$_enc" in
		b64 | base64) _decode="base64 -d" ;;
		gz+b64 | gzip+base64 | gz+base64 | gzip+b64) _decode="gz" ;;
		*) _decode="" ;;
		esac
		{
			if [ "$_decode" = gz ]; then
				printf '%b' "$_raw" | base64 -d | gunzip -c
			elif [ -n "$_decode" ]; then
				printf '%b' "$_raw" | base64 -d
			else
				printf '%b' "$_raw"
			fi
		} > "$SEED_DIR/write.tmp"
		if [ "$_redir" = ">>" ]; then
			cat "$SEED_DIR/write.tmp" >> "$_path"
		else
			cat "$SEED_DIR/write.tmp" > "$_path"
		fi
		rm -f "$SEED_DIR/write.tmp"
		_perm=$(seed_get "$SEED_DIR/user.vars" "write_files.$_n.permissions" 2> /dev/null) || _perm=0644
		chmod "$_perm" "$_path" 2> /dev/null || seed_log "write_files: bad permissions $_perm for $_path"
		_owner=$(seed_get "$SEED_DIR/user.vars" "write_files.$_n.owner" 2> /dev/null) &&
			{ chown "$_owner" "$_path" 2> /dev/null || seed_log "write_files: cannot chown $_path to $_owner"; }
	done
}

# Run the commands of a list (bootcmd, runcmd): a string runs with sh -c, a list is an argument vector.
seed_run_list() {
	_list=$1
	_i=0
	while seed_has "$SEED_DIR/user.vars" "$_list.$_i"; do
		if _cmd=$(seed_get "$SEED_DIR/user.vars" "$_list.$_i" 2> /dev/null); then
			sh -c "$_cmd"
		else
			seed_run_argv "$_list.$_i"
		fi
		_rc=$?
		[ $_rc -eq 0 ] || seed_log "$_list item $_i exited with status $_rc"
		_i=$((_i + 1))
	done
}

# Run the argument vector stored as PATH.0, PATH.1, ... (a function of its own: `set --` is local here).
seed_run_argv() {
	_prefix=$1
	set --
	_j=0
	while _arg=$(seed_raw "$SEED_DIR/user.vars" "$_prefix.$_j" 2> /dev/null); do
		set -- "$@" "$(printf '%b' "$_arg")"
		_j=$((_j + 1))
	done
	[ $# -gt 0 ] || return 0
	"$@"
}

# resolv_conf: the DNS the seed wants (it wins over DHCP's), written to $VM5K_RUN/resolv.conf.seed.
seed_resolv_conf() {
	seed_has "$SEED_DIR/user.vars" resolv_conf || return 0
	{
		_domain=$(seed_get "$SEED_DIR/user.vars" resolv_conf.domain 2> /dev/null) && echo "domain $_domain"
		_search=$(seed_list "$SEED_DIR/user.vars" resolv_conf.searchdomains | tr '\n' ' ')
		[ -n "$_search" ] && echo "search $_search"
		seed_list "$SEED_DIR/user.vars" resolv_conf.nameservers | sed 's/^/nameserver /'
		_opts=$(seed_list "$SEED_DIR/user.vars" resolv_conf.options | tr '\n' ' ')
		[ -n "$_opts" ] && echo "options $_opts"
	} > "$VM5K_RUN/resolv.conf.seed"
}

# What every boot does before the network; host keys are the flavour's business.
seed_early() {
	mkdir -p "$VM5K_RUN" "$VM5K_STATE"
	seed_load
	seed_instance
	seed_hostname
	seed_run_list bootcmd
	seed_authorized_keys
	seed_write_files false
	seed_resolv_conf
}

# What every boot does once SSH is up: deferred files, then runcmd and a user script on a new instance.
seed_late() {
	seed_write_files true
	if [ "$SEED_NEW_INSTANCE" = yes ]; then
		seed_run_list runcmd
		[ -x "$SEED_DIR/user-script" ] && "$SEED_DIR/user-script"
	fi
	seed_instance_done
	seed_log "boot finished uptime=$(uptime_seconds) instance=$SEED_INSTANCE"
}

# Print the host public keys the way cloud-init does, so that clients can pin them from the console.
seed_print_host_keys() {
	{
		echo "-----BEGIN SSH HOST KEY KEYS-----"
		cat "$@"
		echo "-----END SSH HOST KEY KEYS-----"
	} > /dev/console 2> /dev/null
}
