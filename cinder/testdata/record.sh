#!/bin/bash
# Records the fixtures of this directory from the lab's real Keystone + Cinder (scripts/openstack-up.sh),
# as the demo user: the answers the unit tests' fake (fake_test.go) serves. Run by hand:
#   set -a; . /var/lib/ceph-docker-plugin-lab/openstack/env; set +a; bash cinder/testdata/record.sh
# It creates one volume (and a snapshot of it) named fixture-<random>, attaches it, and deletes it all.
# Tokens never reach a file (they travel in headers); passwords, keys and secret UUIDs in bodies
# are replaced by "REDACTED"; the services' URLs become {{KEYSTONE}} and {{CINDER}}.
set -euo pipefail
cd "$(dirname "$0")"
: "${OS_AUTH_URL:?source the lab env first}"
KS=${OS_AUTH_URL%/v3}
auth() { # auth USER PASSWORD [PROJECT] -> the token request's body
	jq -n --arg u "$1" --arg p "$2" --arg pr "${3:-$OS_PROJECT_NAME}" '{auth: {identity: {methods: ["password"],
		password: {user: {name: $u, domain: {name: "Default"}, password: $p}}},
		scope: {project: {name: $pr, domain: {name: "Default"}}}}}'
}
redact() {
	jq --arg ks "$KS" --arg cs "$CINDER" 'walk(if type == "object" then with_entries(
		if (.key | test("password|token|secret|keyring|^key$"; "i")) and (.value | type == "string") then .value = "REDACTED" else . end) else . end)
		| walk(if type == "string" then (gsub($ks; "{{KEYSTONE}}") | if $cs != "" then gsub($cs; "{{CINDER}}") else . end) else . end)'
}
CINDER=""
# rec NAME METHOD URL [BODY]: writes NAME.json (when there is a body) and prints the status.
rec() {
	local name=$1 method=$2 url=$3 body=${4:-} out hdr code
	out=$(mktemp) hdr=$(mktemp)
	args=(-sS -m 30 -o "$out" -D "$hdr" -w '%{http_code}' -X "$method" -H 'Accept: application/json'
		-H 'OpenStack-API-Version: volume 3.54')
	[ -n "${TOKEN:-}" ] && args+=(-H "X-Auth-Token: $TOKEN")
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data "$body")
	code=$(curl "${args[@]}" "$url")
	if [ -s "$out" ]; then redact <"$out" >"$name.json"; fi
	echo "$name $method ${url#$KS} -> $code" >&2
	echo "$code"
	rm -f "$out" "$hdr"
}

# Keystone: a token with its catalog; a wrong password; the projects the user can work in.
body=$(auth "$OS_USERNAME" "$OS_PASSWORD")
hdr=$(mktemp)
curl -sS -m 30 -D "$hdr" -o tok.raw -H 'Content-Type: application/json' --data "$body" "$KS/v3/auth/tokens" >/dev/null
TOKEN=$(awk 'tolower($1)=="x-subject-token:"{print $2}' "$hdr" | tr -d '\r')
rm -f "$hdr"
CINDER=$(jq -r '.token.catalog[] | select(.type=="volumev3") | .endpoints[] | select(.interface=="public") | .url' tok.raw | sed -E 's#(https?://[^/]+).*#\1#')
PROJECT=$(jq -r .token.project.id tok.raw)
redact <tok.raw >keystone_token.json && rm -f tok.raw
T=$TOKEN; TOKEN=""
rec keystone_wrong_password POST "$KS/v3/auth/tokens" "$(auth "$OS_USERNAME" not-the-password)" >/dev/null
# A project where the user has no role (admin): Keystone answers as to a wrong password.
rec keystone_no_role POST "$KS/v3/auth/tokens" "$(auth "$OS_USERNAME" "$OS_PASSWORD" admin)" >/dev/null
TOKEN=$T
rec keystone_auth_projects GET "$KS/v3/auth/projects" >/dev/null
C="$CINDER/v3/$PROJECT"

# Cinder: volume types, a volume's life.
rec cinder_types GET "$C/types" >/dev/null
TYPE=$(jq -r '.volume_types[0].id' cinder_types.json)
rec cinder_type GET "$C/types/$TYPE" >/dev/null
NAME=fixture-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
rec cinder_volume_create POST "$C/volumes" "$(jq -n --arg n "$NAME" '{volume: {name: $n, size: 1,
	description: ("Docker volume " + $n + " (ceph-docker-plugin)"),
	metadata: {"docker-plugin.managed-by": "ceph-docker-plugin", "docker-plugin.fstype": "ext4"}}}')" >/dev/null
VOL=$(jq -r .volume.id cinder_volume_create.json)
for _ in $(seq 60); do
	rec cinder_volume_available GET "$C/volumes/$VOL" >/dev/null 2>&1
	[ "$(jq -r .volume.status cinder_volume_available.json)" = available ] && break
	sleep 0.5
done
rec cinder_volumes_detail GET "$C/volumes/detail?name=$NAME" >/dev/null
# The older volume action that the connection parser also reads (fields nested under data).
ic_conn=$(jq -n '{host: "fixture-host", platform: "x86_64", os_type: "linux", multipath: false, do_local_attach: false}')
rec cinder_initialize_connection POST "$C/volumes/$VOL/action" "$(jq -n --argjson c "$ic_conn" '{"os-initialize_connection": {connector: $c}}')" >/dev/null
rec cinder_terminate_connection POST "$C/volumes/$VOL/action" "$(jq -n --argjson c "$ic_conn" '{"os-terminate_connection": {connector: $c}}')" >/dev/null
rec cinder_volumes_detail_empty GET "$C/volumes/detail?name=$NAME-none" >/dev/null
rec cinder_snapshot_create POST "$C/snapshots" "$(jq -n --arg v "$VOL" --arg n "$NAME-snap" '{snapshot: {volume_id: $v, name: $n}}')" >/dev/null
SNAP=$(jq -r .snapshot.id cinder_snapshot_create.json)
for _ in $(seq 60); do
	rec cinder_snapshot GET "$C/snapshots/$SNAP" >/dev/null 2>&1
	[ "$(jq -r .snapshot.status cinder_snapshot.json)" = available ] && break
	sleep 0.5
done
rec cinder_snapshot_delete DELETE "$C/snapshots/$SNAP" >/dev/null
for _ in $(seq 60); do
	[ "$(rec x GET "$C/snapshots/$SNAP" 2>/dev/null)" = 404 ] && break
	sleep 0.5
done
rm -f x.json

# The attachments API, as the plugin uses it (connector with the docker:<host>/<mount id> mount point).
INST=5f8c2a51-1b6e-5d3c-9a4e-0c1d2e3f4a5b
MOUNT=53a902c4101d880e80f73c8145e76a2f89d7a44eaab3901326e35bf7251c2974
conn=$(jq -n --arg m "docker:fixture-host/$MOUNT" '{host: "fixture-host", platform: "x86_64", os_type: "linux",
	multipath: false, do_local_attach: false, mountpoint: $m}')
rec cinder_attachment_create POST "$C/attachments" "$(jq -n --arg v "$VOL" --arg i "$INST" --argjson c "$conn" \
	'{attachment: {volume_uuid: $v, instance_uuid: $i, connector: $c, mode: "rw"}}')" >/dev/null
ATT=$(jq -r .attachment.id cinder_attachment_create.json)
rec cinder_volume_attaching GET "$C/volumes/$VOL" >/dev/null
rec cinder_attachments_detail_pending GET "$C/attachments/detail?volume_id=$VOL" >/dev/null
rec cinder_attachment_complete POST "$C/attachments/$ATT/action" '{"os-complete": null}' >/dev/null
rec cinder_volume_in_use GET "$C/volumes/$VOL" >/dev/null
rec cinder_volumes_detail_in_use GET "$C/volumes/detail?name=$NAME" >/dev/null
rec cinder_attachment GET "$C/attachments/$ATT" >/dev/null
rec cinder_attachments_detail GET "$C/attachments/detail?volume_id=$VOL" >/dev/null
rec cinder_attachment_create_in_use POST "$C/attachments" "$(jq -n --arg v "$VOL" --argjson c "$conn" \
	'{attachment: {volume_uuid: $v, instance_uuid: "6f8c2a51-1b6e-5d3c-9a4e-0c1d2e3f4a5b", connector: $c, mode: "rw"}}')" >/dev/null
rec cinder_volume_delete_in_use DELETE "$C/volumes/$VOL" >/dev/null
rec cinder_attachment_delete DELETE "$C/attachments/$ATT" >/dev/null
rec cinder_attachment_notfound GET "$C/attachments/$ATT" >/dev/null

# Deleting a volume still being created (what Create's undo meets at its deadline). Cinder deletes
# one not yet scheduled to a backend (202) and refuses one scheduled and still creating (400):
# a race, so try until the refusal is seen, and keep it in cinder_volume_delete_creating.json.
for try in 1 2 3 4 5 6; do
	rec x POST "$C/volumes" "$(jq -n --arg n "$NAME-$try" '{volume: {name: $n, size: 1}}')" >/dev/null 2>&1
	VOL2=$(jq -r .volume.id x.json)
	sleep 0.1
	rec x GET "$C/volumes/$VOL2" >/dev/null 2>&1
	status=$(jq -r .volume.status x.json)
	code=$(rec cinder_volume_delete_creating DELETE "$C/volumes/$VOL2" 2>/dev/null)
	echo "deleting a volume in status $status: $code" >&2
	for _ in $(seq 60); do
		[ "$(rec x GET "$C/volumes/$VOL2" 2>/dev/null)" = 404 ] && break
		[ "$(jq -r .volume.status x.json)" = available ] && rec x DELETE "$C/volumes/$VOL2" >/dev/null 2>&1
		sleep 0.5
	done
	[ "$status" = creating ] && [ "$code" = 400 ] && break
	rm -f cinder_volume_delete_creating.json
done
rm -f x.json

# Rename (REMOVE_ACTION=keep), delete, gone.
rec cinder_volume_update PUT "$C/volumes/$VOL" "$(jq -n --arg n "$NAME~removed-20261129T150000.000Z" \
	'{volume: {name: $n, description: "Docker volume (ceph-docker-plugin), removed from Docker with REMOVE_ACTION=keep"}}')" >/dev/null
for _ in $(seq 60); do
	[ "$(rec cinder_volume_delete DELETE "$C/volumes/$VOL" 2>/dev/null)" = 202 ] && break
	sleep 0.5
done
for _ in $(seq 60); do
	[ "$(rec cinder_volume_notfound GET "$C/volumes/$VOL" 2>/dev/null)" = 404 ] && break
	sleep 0.5
done
rm -f cinder_volume_delete.json
echo "recorded volume $VOL ($NAME), now deleted" >&2
