#!/usr/bin/python3
# (adapted from the team's lab recipe; run by scripts/openstack-up.sh)
# cinder_types.py: (admin) wait until cinder-scheduler and cinder-volume report 'up',
# then make sure one public volume type per backend exists (volume_backend_name=<b>), and a
# multiattach one (<b>-multiattach).
import os
import time
from keystoneauth1 import session
from keystoneauth1.identity import v3

PW = os.environ.get("OS_LAB_PASSWORD", "secret")
BACKENDS = os.environ.get("BACKENDS", "fake").split(",")
s = session.Session(auth=v3.Password(
    auth_url="http://127.0.0.1:5000/v3", username="admin", password=PW,
    project_name="admin", user_domain_id="default", project_domain_id="default"))
ep = dict(service_type="block-storage", interface="public")
hdr = {"OpenStack-API-Version": "volume 3.0"}

want = {"cinder-scheduler"} | {f"cinder-volume:{b}" for b in BACKENDS}
for _ in range(240):
    svcs = s.get("/os-services", endpoint_filter=ep, headers=hdr).json()["services"]
    up = {sv["binary"] + (":" + sv["host"].split("@")[1] if "@" in sv["host"] else "")
          for sv in svcs if sv["state"] == "up" and sv["status"] == "enabled"}
    if want <= up:
        break
    time.sleep(0.5)
else:
    raise SystemExit(f"cinder services not up: want {want}, have {up}")

# 'up' only means a heartbeat in the database within service_down_time (60 s): right after the
# processes were killed and restarted, the dead ones' heartbeats still count. A create is
# scheduled only once the scheduler holds the backend's capabilities (sent by cinder-volume at its
# start and every periodic_interval), so wait until the scheduler lists a pool for each backend.
for _ in range(300):
    pools = s.get("/scheduler-stats/get_pools?detail=True", endpoint_filter=ep, headers=hdr).json()["pools"]
    have = {p["name"].split("@")[1].split("#")[0] for p in pools
            if "@" in p["name"] and "free_capacity_gb" in p.get("capabilities", {})}
    if set(BACKENDS) <= have:
        break
    time.sleep(0.5)
else:
    raise SystemExit(f"cinder-scheduler has no capabilities for {set(BACKENDS) - have} after 150 s: see cinder-volume.log")

types = {t["name"]: t for t in s.get("/types", endpoint_filter=ep).json()["volume_types"]}
for b in BACKENDS:
    if b not in types:
        t = s.post("/types", endpoint_filter=ep, json={"volume_type": {
            "name": b, "os-volume-type-access:is_public": True,
            "extra_specs": {"volume_backend_name": b}}}).json()["volume_type"]
# A multiattach type per backend (<backend>-multiattach): Cinder lets two hosts reserve such a
# volume at once, which the plugin must refuse (tests race two hosts' first Mounts on one).
for b in BACKENDS:
    name = f"{b}-multiattach"
    if name not in types:
        s.post("/types", endpoint_filter=ep, json={"volume_type": {
            "name": name, "os-volume-type-access:is_public": True,
            "extra_specs": {"volume_backend_name": b, "multiattach": "<is> True"}}})
    types[name] = True
print("cinder services up:", sorted(up), "types:", sorted(set(types) | set(BACKENDS)))

# default Cinder quotas (10 volumes / 10 snapshots per project) are too small for parallel
# test suites: raise them for project demo
demo = s.get("/projects", endpoint_filter=dict(service_type="identity", interface="public"),
             params={"name": "demo"}).json()["projects"][0]["id"]
s.put(f"/os-quota-sets/{demo}", endpoint_filter=ep, json={"quota_set": {
    "volumes": 200, "snapshots": 200, "gigabytes": 5000, "backups": 50}})
print("demo quotas raised")
