#!/usr/bin/python3
# (adapted from the team's lab recipe; run by scripts/openstack-up.sh)
# bootstrap.py: idempotent Keystone setup after `keystone-manage bootstrap`:
#   projects service + demo + demo2, users cinder (admin in service) + demo (member in demo and demo2),
#   catalog: a Nova stub (see below), Cinder v3 under types 'block-storage' and 'volumev3' (gophercloud v1 looks
#   for volumev3, v2 for block-storage). Plain REST via keystoneauth1 = one fast process.
import os
from keystoneauth1 import session
from keystoneauth1.identity import v3

KS = "http://127.0.0.1:5000/v3"
PW = os.environ.get("OS_LAB_PASSWORD", "secret")
CINDER = "http://127.0.0.1:8776/v3/%(project_id)s"
s = session.Session(auth=v3.Password(
    auth_url=KS, username="admin", password=PW, project_name="admin",
    user_domain_id="default", project_domain_id="default"))


def get(path, key, **flt):
    r = s.get(KS + path, params=flt).json()[key]
    return r[0] if r else None


def ensure(path, key, body, **flt):
    """return object matching flt, creating it with body if absent"""
    o = get(path, key, **flt)
    if o is None:
        o = s.post(KS + path, json={key[:-1]: body}).json()[key[:-1]]
    return o


role = {r: get("/roles", "roles", name=r)["id"] for r in ("admin", "member", "reader")}
for proj, user, rl in (("service", "cinder", "admin"), ("demo", "demo", "member")):
    p = ensure("/projects", "projects", {"name": proj, "domain_id": "default"}, name=proj)
    u = ensure("/users", "users", {"name": user, "password": PW, "domain_id": "default",
                                    "default_project_id": p["id"]}, name=user)
    s.put(f"{KS}/projects/{p['id']}/users/{u['id']}/roles/{role[rl]}")
# demo2: a second project demo works in (member), for `-o project-id` tests.
p2 = ensure("/projects", "projects", {"name": "demo2", "domain_id": "default"}, name="demo2")
s.put(f"{KS}/projects/{p2['id']}/users/{get('/users', 'users', name='demo')['id']}/roles/{role['member']}")

# 'compute' points at a 404-only stub (up.sh): Cinder >= 21.3 (OSSA-2023-003) asks Nova
# before a user may delete an attachment that has instance_uuid + connection_info;
# Nova answering 404 lets Cinder delete it locally.
NOVA_STUB = "http://127.0.0.1:8774/v2.1"
for stype, name, url in (("block-storage", "cinder", CINDER), ("volumev3", "cinderv3", CINDER),
                         ("compute", "nova-stub", NOVA_STUB),
                         # OSC 6.0 `volume create` insists on an image endpoint existing
                         ("image", "glance-stub", "http://127.0.0.1:8774/image/")):
    svc = ensure("/services", "services", {"type": stype, "name": name}, type=stype)
    for iface in ("public", "internal", "admin"):
        if not get("/endpoints", "endpoints", service_id=svc["id"], interface=iface):
            s.post(KS + "/endpoints", json={"endpoint": {
                "service_id": svc["id"], "interface": iface, "url": url,
                "region_id": "RegionOne"}})
print("keystone bootstrap ok")
