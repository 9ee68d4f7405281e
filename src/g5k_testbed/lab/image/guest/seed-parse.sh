#!/bin/sh
# vm5k guest: flatten a cloud-init YAML document (meta-data, user-data) into "path<TAB>value" lines.
#
#   seed-parse FILE  ->  hostname<TAB>vm-1
#                        ssh_authorized_keys.0<TAB>ssh-ed25519 AAAA... alice@x
#                        write_files.0.content<TAB>line one\nline two\n
#
# Paths join mapping keys and sequence indices with dots. In values, a backslash is written \\, a
# newline \n and a tab \t, so that `printf '%b'` restores them. The YAML subset (what cloud-init seeds
# and PyYAML's safe_dump use): block mappings and sequences (including "- - item" and "- key: value"),
# plain scalars (also over several lines), 'single' and "double" quoted scalars (escapes, folding),
# literal and folded block scalars (| |- |+ > >- with an optional indentation digit), one-level flow
# sequences and flow mappings ([a, 'b'], {"k": "v"}), comments, "---". Anchors, aliases and tags are not
# supported (tags are dropped). Written for POSIX awk (busybox awk and mawk): no gawk extensions.
exec awk '
BEGIN { q = sprintf("%c", 39); n = 0 }
{ sub(/\r$/, ""); L[++n] = $0 }
END { parse() }

function indent_of(s,    i) { i = match(s, /[^ ]/); return i ? i - 1 : length(s) }
function ignorable(s) { return s ~ /^[ \t]*$/ || s ~ /^[ \t]*#/ || s ~ /^(---|\.\.\.)([ \t]|$)/ }
function is_dash(c) { return c == "-" || substr(c, 1, 2) == "- " }
function child(p, k) { return p == "" ? k : p "." k }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t]+$/, "", s); return s }
function trim(s) { return rtrim(ltrim(s)) }
function esc(s,    out, k, ch) {
	out = ""
	for (k = 1; k <= length(s); k++) {
		ch = substr(s, k, 1)
		if (ch == "\\") out = out "\\\\"; else if (ch == "\n") out = out "\\n"; else if (ch == "\t") out = out "\\t"; else out = out ch
	}
	return out
}
function emit(path, value) { printf "%s\t%s\n", path, esc(value) }
function push(ind, kind, prefix) { depth++; IND[depth] = ind; KIND[depth] = kind; PFX[depth] = prefix; CNT[depth] = 0 }

function parse(    i, line, ind, c) {
	depth = 0; IND[0] = 0; KIND[0] = "map"; PFX[0] = ""; CNT[0] = 0; pending = 0
	i = 1
	while (i <= n) {
		line = L[i]
		if (ignorable(line)) { i++; continue }
		ind = indent_of(line); c = rtrim(substr(line, ind + 1))
		if (pending) {
			pending = 0
			if (ind > pend_ind || (ind == pend_ind && is_dash(c))) push(ind, is_dash(c) ? "seq" : "map", pend_path)
			else emit(pend_path, "")
		}
		while (depth > 0 && (ind < IND[depth] || (ind == IND[depth] && KIND[depth] == "seq" && !is_dash(c)))) depth--
		if (depth == 0 && ind == 0 && substr(c, 1, 1) == "{") { i = flow_value(i, "", c, -1); continue }
		i = entry(i, ind, c)
	}
	if (pending) emit(pend_path, "")
}

# One block entry (a sequence item or a "key: value" pair) starting at column ind; returns the next line.
function entry(i, ind, c,    path, rest, off, col) {
	if (is_dash(c)) {
		if (KIND[depth] != "seq" || IND[depth] != ind) push(ind, "seq", PFX[depth])
		path = child(PFX[depth], CNT[depth]++)
		rest = substr(c, 2); off = match(rest, /[^ ]/)
		if (!off) { pending = 1; pend_path = path; pend_ind = ind; return i + 1 }
		col = ind + off; rest = substr(rest, off)
		if (is_dash(rest)) { push(col, "seq", path); return entry(i, col, rest) }
		if (split_key(rest)) { push(col, "map", path); return entry(i, col, rest) }
		return value(i, path, rest, ind)
	}
	if (!split_key(c)) return i + 1
	path = child(PFX[depth], KEY)
	if (REST == "") { pending = 1; pend_path = path; pend_ind = ind; return i + 1 }
	return value(i, path, REST, ind)
}

# "key: rest" -> KEY, REST; false when c is not a mapping entry.
function split_key(c,    k, pos, ch) {
	ch = substr(c, 1, 1)
	if (ch == "\"" || ch == q) {
		pos = quote_end(c)
		if (!pos) return 0
		k = unquote(substr(c, 1, pos)); c = substr(c, pos + 1)
		if (c !~ /^[ \t]*:([ \t]|$)/) return 0
		sub(/^[ \t]*:/, "", c); KEY = k; REST = trim(c); return 1
	}
	if (!match(c, /:([ \t]|$)/) || ch == "#" || ch == "[" || ch == "{") return 0
	KEY = rtrim(substr(c, 1, RSTART - 1)); REST = trim(substr(c, RSTART + 1))
	if (substr(REST, 1, 1) == "#") REST = ""
	return 1
}

# Position of the quote closing the quoted scalar that starts c (0 when it does not close on this line).
function quote_end(c,    k, ch, qc) {
	qc = substr(c, 1, 1)
	for (k = 2; k <= length(c); k++) {
		ch = substr(c, k, 1)
		if (qc == "\"" && ch == "\\") { k++; continue }
		if (ch == qc) {
			if (qc == q && substr(c, k + 1, 1) == q) { k++; continue }
			return k
		}
	}
	return 0
}

# The text of a complete one-line quoted scalar (escapes resolved), through the quoted-scalar reader.
function unquote(c,    saved) { saved = QUIET; QUIET = 1; quoted(n + 1, "", c, -1, substr(c, 1, 1)); QUIET = saved; return LASTQ }

# The value starting at rest (line i), belonging to an entry at column parent; returns the next line.
function value(i, path, rest, parent,    ch) {
	if (substr(rest, 1, 1) == "!") { sub(/^![^ ]*[ ]*/, "", rest); if (rest == "") { pending = 1; pend_path = path; pend_ind = parent; return i + 1 } }
	if (substr(rest, 1, 1) == "&" || substr(rest, 1, 1) == "*") { sub(/^[&*][^ ]*[ ]*/, "", rest) }
	ch = substr(rest, 1, 1)
	if (ch == "|" || ch == ">") return block(i, path, rest, parent)
	if (ch == "\"" || ch == q) return quoted(i, path, rest, parent, ch)
	if (ch == "[" || ch == "{") return flow_value(i, path, rest, parent)
	return plain(i, path, rest, parent)
}

function strip_comment(s) { sub(/[ \t]+#.*$/, "", s); return s }

function plain(i, path, rest, parent,    text, j, line, blanks) {
	text = strip_comment(rest); blanks = 0
	for (j = i + 1; j <= n; j++) {
		line = L[j]
		if (line ~ /^[ \t]*$/) { blanks++; continue }
		if (line ~ /^[ \t]*#/ || indent_of(line) <= parent) break
		line = strip_comment(trim(line))
		if (is_dash(line) && parent >= 0) break
		text = text (blanks ? repeat("\n", blanks) : " ") line; blanks = 0
	}
	while (j > i + 1 && L[j - 1] ~ /^[ \t]*$/) j--
	emit(path, text)
	return j
}

function repeat(s, k,    out) { out = ""; while (k-- > 0) out = out s; return out }

function block(i, path, header, parent,    style, chomp, digit, j, line, bi, text, k, lines, m, prev_more, more, blanks, ch) {
	style = substr(header, 1, 1); chomp = "clip"; digit = 0
	for (k = 2; k <= length(header); k++) {
		ch = substr(header, k, 1)
		if (ch == "-") chomp = "strip"; else if (ch == "+") chomp = "keep"; else if (ch ~ /[1-9]/) digit = ch + 0; else break
	}
	bi = digit ? parent + digit : -1; m = 0
	for (j = i + 1; j <= n; j++) {
		line = L[j]
		if (line ~ /^[ ]*$/) { lines[++m] = ""; continue }
		if (bi < 0) { bi = indent_of(line); if (bi <= parent) break }
		if (indent_of(line) < bi) break
		lines[++m] = substr(line, bi + 1)
	}
	blanks = 0
	while (m > 0 && lines[m] == "") { m--; blanks++ }
	text = ""
	if (style == "|") {
		for (k = 1; k <= m; k++) text = text lines[k] (k < m ? "\n" : "")
	} else {
		prev_more = 0
		for (k = 1; k <= m; k++) {
			more = lines[k] ~ /^[ \t]/
			if (k == 1) text = lines[k]
			else if (lines[k] == "") text = text "\n"
			else if (lines[k - 1] == "" || more || prev_more) text = text (lines[k - 1] == "" ? "" : "\n") lines[k]
			else text = text " " lines[k]
			prev_more = more
		}
	}
	if (m > 0 && chomp != "strip") text = text "\n"
	if (chomp == "keep") text = text repeat("\n", blanks)
	emit(path, text)
	return j
}

# A quoted scalar, possibly folded over several lines.
function quoted(i, path, rest, parent, qc,    j, buf, out, k, ch, done, first, line, hex, joined) {
	buf = substr(rest, 2); out = ""; j = i; done = 0; first = 1
	while (!done) {
		if (!first) {
			j++
			if (j > n) break
			line = L[j]
			if (line ~ /^[ \t]*$/) { out = out "\n"; continue }
			if (out !~ /\n$/ && !joined) out = out " "
			buf = ltrim(line)
		}
		first = 0; joined = 0
		for (k = 1; k <= length(buf); k++) {
			ch = substr(buf, k, 1)
			if (qc == q && ch == q) {
				if (substr(buf, k + 1, 1) == q) { out = out q; k++; continue }
				done = 1; break
			}
			if (qc == "\"" && ch == "\"") { done = 1; break }
			if (qc == "\"" && ch == "\\") {
				if (k == length(buf)) { joined = 1; break }
				ch = substr(buf, ++k, 1)
				if (ch == "n") out = out "\n"; else if (ch == "t") out = out "\t"; else if (ch == "r") out = out "\r"
				else if (ch == "0") out = out ""; else if (ch == "e") out = out sprintf("%c", 27)
				else if (ch == "a") out = out sprintf("%c", 7); else if (ch == "b") out = out sprintf("%c", 8)
				else if (ch == "v") out = out sprintf("%c", 11); else if (ch == "f") out = out sprintf("%c", 12)
				else if (ch == "N") out = out utf8(133); else if (ch == "_") out = out utf8(160)
				else if (ch == "L") out = out utf8(8232); else if (ch == "P") out = out utf8(8233)
				else if (ch == "x" || ch == "u" || ch == "U") {
					hex = substr(buf, k + 1, ch == "x" ? 2 : ch == "u" ? 4 : 8); k += length(hex)
					out = out utf8(hexval(hex))
				} else out = out ch
				continue
			}
			out = out ch
		}
		if (!done && !joined) out = rtrim(out)
	}
	LASTQ = out
	if (!QUIET) emit(path, out)
	return j + 1
}

function hexval(h,    k, v, d) {
	v = 0; h = tolower(h)
	for (k = 1; k <= length(h); k++) { d = index("0123456789abcdef", substr(h, k, 1)) - 1; v = v * 16 + d }
	return v
}

function utf8(c) {
	if (c < 128) return sprintf("%c", c)
	if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
	if (c < 65536) return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
	return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64, 128 + int(c / 64) % 64, 128 + c % 64)
}

# A flow collection ([...] or {...}), possibly over several lines, one level of nesting at most.
function flow_value(i, path, rest, parent,    text, j, open, closer, body, items, k, m, item, key) {
	text = rest; j = i
	while (!balanced(text) && j < n) { j++; text = text " " trim(L[j]) }
	open = substr(text, 1, 1); closer = open == "[" ? "]" : "}"
	body = substr(text, 2); sub("[" closer "][ \t]*(#.*)?$", "", body)
	m = split_flow(body, items)
	if (m == 0) { emit(path, ""); return j + 1 }
	for (k = 1; k <= m; k++) {
		item = trim(items[k])
		if (open == "[") flow_scalar(child(path, k - 1), item)
		else if (split_key(item)) flow_scalar(child(path, KEY), REST)
	}
	return j + 1
}

function balanced(s,    k, ch, level, inq) {
	level = 0; inq = ""
	for (k = 1; k <= length(s); k++) {
		ch = substr(s, k, 1)
		if (inq != "") { if (ch == "\\" && inq == "\"") k++; else if (ch == inq) inq = ""; continue }
		if (ch == "\"" || ch == q) inq = ch
		else if (ch == "[" || ch == "{") level++
		else if (ch == "]" || ch == "}") level--
	}
	return level <= 0
}

function split_flow(s, out,    k, ch, m, cur, inq, level) {
	m = 0; cur = ""; inq = ""; level = 0
	for (k = 1; k <= length(s); k++) {
		ch = substr(s, k, 1)
		if (inq != "") { cur = cur ch; if (ch == "\\" && inq == "\"") { k++; cur = cur substr(s, k, 1) } else if (ch == inq) inq = ""; continue }
		if (ch == "\"" || ch == q) inq = ch
		if (ch == "[" || ch == "{") level++
		if (ch == "]" || ch == "}") level--
		if (ch == "," && level == 0) { out[++m] = cur; cur = ""; continue }
		cur = cur ch
	}
	if (trim(cur) != "") out[++m] = cur
	return m
}

function flow_scalar(path, item,    ch) {
	ch = substr(item, 1, 1)
	if (ch == "\"" || ch == q) { quoted(n + 1, path, item, -1, ch); return }
	if (ch == "[" || ch == "{") { flow_value(0, path, item, -1); return }
	emit(path, item)
}
' "$@"
