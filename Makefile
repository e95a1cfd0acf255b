# ceph-docker-plugin: a Docker managed volume plugin for Ceph RBD (direct or through Cinder).
# `make help` lists the targets. Integration targets start the real services they need.

SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO      ?= go
# go-ceph must be built for the librbd it links against: Debian bookworm ships pacific (16.2).
GOTAGS  ?= pacific
LAB_DIR ?= /var/lib/ceph-docker-plugin-lab
export LAB_DIR
CEPH_ENV := $(LAB_DIR)/ceph/env
# Load the lab Ceph's coordinates (CEPH_CONF, CEPH_USER, ...) written by scripts/ceph-up.sh.
WITH_CEPH_ENV = set -a && . $(CEPH_ENV) && set +a &&
# ... and of the lab Keystone + Cinder (OS_*), written by scripts/openstack-up.sh.
WITH_LAB_ENV = set -a && . $(CEPH_ENV) && . $(LAB_DIR)/openstack/env && set +a &&
# The Docker engine of docker-up, plugin, e2e, e2e-cinder and demo: 20.10 (Debian 12's docker.io) or
# 28 (Debian forky's, unpacked privately); `make e2e-all` runs both suites on both, side by side.
# Where make lab-build puts the guests' kernel and initramfs (another directory lets a second
# checkout run its own lab at the same time).
LAB_OUT ?= $(LAB_DIR)/lab
# ... and the docker guests' image, kernel and plugin (make lab-docker-build).
LAB_DOCKER_OUT ?= $(LAB_OUT)-docker
export LAB_DOCKER_OUT
export LAB_OUT
DOCKER_ENGINE ?= 20.10
export DOCKER_ENGINE
DOCKER_LAB := $(LAB_DIR)/$(if $(filter 28,$(DOCKER_ENGINE)),docker-28,docker)
# The e2e plugins serve metrics (scraped by a real Prometheus in the suite), each on a loopback
# port of its own: plugins share the host's network, and both engines' plugins stay installed.
E2E_METRICS_RBD := 127.0.0.1:$(if $(filter 28,$(DOCKER_ENGINE)),9382,9380)
E2E_METRICS_CINDER := 127.0.0.1:$(if $(filter 28,$(DOCKER_ENGINE)),9383,9381)

.PHONY: help deps test-deps build test unit lint fmt down ceph-up openstack-up demo plugin plugin-csi e2e e2e-cinder e2e-csi e2e-all docker-up lab lab-build lab-docker lab-docker-build lab-swarm lab-upgrade lab-firstmount lab-grow lab-swarm-csi

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

deps: ## install the build dependencies (Debian's librbd-dev, librados-dev, libradospp-dev, g++) if missing
	scripts/deps.sh

build: deps ## compile every package; the binaries (the plugin, cdp-bench) go to bin/
	$(GO) build -tags '$(GOTAGS)' ./...
	$(GO) build -tags '$(GOTAGS)' -o bin/ ./cmd/...

ceph-up: ## start (or bootstrap) the lab Ceph on 127.0.0.1; installs Debian's pacific packages if missing
	scripts/ceph-up.sh

openstack-up: ceph-up ## start (or install and bootstrap) the lab Keystone + Cinder (RBD backend) on 127.0.0.1
	scripts/openstack-up.sh

test-deps: ## install the tools integration tests use beside the services (Debian's Prometheus, dosfstools, btrfs-progs)
	scripts/test-deps.sh

test: ceph-up openstack-up test-deps ## unit tests (-race) and integration tests against the real lab Ceph and Keystone + Cinder
	$(WITH_LAB_ENV) $(GO) test -race -count=1 -timeout 40m -tags '$(GOTAGS) integration' ./...

unit: deps ## unit tests only (no services)
	$(GO) test -race -count=1 -tags '$(GOTAGS)' ./...

lint: deps ## go vet (with and without the integration tag) and gofmt
	$(GO) vet -tags '$(GOTAGS)' ./...
	$(GO) vet -tags '$(GOTAGS) integration' ./...
	$(GO) vet -tags '$(GOTAGS) lab' ./lab/...
	$(GO) vet -tags '$(GOTAGS) lab labdocker' ./lab/...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

demo: ## the main job: real Ceph + dockerd, build and install the managed plugin, walk the user's scenario; BACKEND=cinder adds real Keystone + Cinder
	scripts/demo.sh

docker-up: ## start the private dockerd (installs Debian's docker.io if missing) and import base images
	scripts/docker-up.sh
	scripts/docker-images.sh

plugin: ceph-up docker-up ## build the managed plugin (config.json + rootfs), `docker plugin create` and enable it
	scripts/plugin-build.sh CEPH_USER=docker CEPH_KEYRING=/etc/ceph/ceph.client.docker.keyring METRICS_ADDR=$(E2E_METRICS_RBD)

plugin-csi: ceph-up docker-up ## the swarm cluster-volume plugin ceph-csi:latest (plugin/config-csi.json; needs DOCKER_ENGINE=28)
	PLUGIN=ceph-csi:latest CONFIG=config-csi.json scripts/plugin-build.sh CEPH_USER=docker CEPH_KEYRING=/etc/ceph/ceph.client.docker.keyring

e2e: plugin test-deps ## end-to-end suite: the real docker CLI against the private dockerd (DOCKER_ENGINE=20.10|28) and the managed plugin
	set -a && . $(DOCKER_LAB)/env && set +a && CDP_METRICS_ADDR=$(E2E_METRICS_RBD) $(GO) test -count=1 -timeout 20m -tags e2e -v ./plugin/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

e2e-cinder: ceph-up openstack-up docker-up test-deps ## the end-to-end suite again with BACKEND=cinder (plugin ceph-cinder:latest)
	set -a && . $(LAB_DIR)/openstack/env && set +a && PLUGIN=ceph-cinder:latest scripts/plugin-build.sh BACKEND=cinder \
	  CEPH_USER=docker CEPH_KEYRING=/etc/ceph/ceph.client.docker.keyring OS_AUTH_URL=$$OS_AUTH_URL OS_USERNAME=$$OS_USERNAME \
	  OS_PASSWORD=$$OS_PASSWORD OS_PROJECT_NAME=$$OS_PROJECT_NAME OS_REGION_NAME=$$OS_REGION_NAME METRICS_ADDR=$(E2E_METRICS_CINDER)
	set -a && . $(DOCKER_LAB)/env && set +a && CDP_PLUGIN=ceph-cinder:latest CDP_BACKEND=cinder CDP_METRICS_ADDR=$(E2E_METRICS_CINDER) \
	  $(GO) test -count=1 -timeout 20m -tags e2e -v ./plugin/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

e2e-csi: ## swarm cluster volumes through the CSI plugin on Docker 28 (builds and installs ceph-csi:latest, and ceph:latest beside it)
	@[ "$(DOCKER_ENGINE)" = 28 ] || { echo "make e2e-csi needs DOCKER_ENGINE=28 (cluster volumes work from Docker 28.2)"; exit 1; }
	$(MAKE) plugin-csi plugin
	$(WITH_CEPH_ENV) set -a && . $(DOCKER_LAB)/env && set +a && CDP_CSI_PLUGIN=ceph-csi:latest CDP_PLUGIN=ceph:latest \
	  $(GO) test -count=1 -timeout 20m -tags e2e -v -run 'TestClusterVolumes' ./plugin/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

e2e-all: ## e2e-cinder and e2e on both engines (Debian 12's dockerd 20.10 and 28.x) at the same time, and e2e-csi on 28; each engine's output after both end
	MAKE='$(MAKE)' scripts/e2e-all.sh

lab-build: ## build the krbd lab's guest: Debian's stock kernel (unpacked, not installed) + an initramfs with the plugin
	scripts/lab-build.sh

lab: ceph-up lab-build ## krbd and two-host cases in QEMU guests (Debian's kernel, TCG) running the plugin; LAB_RUN=regexp picks cases
	$(WITH_CEPH_ENV) set -a && . $(LAB_OUT)/env && set +a && \
	  $(GO) test -count=1 -timeout 30m -tags '$(GOTAGS) lab' -v $(if $(LAB_RUN),-run '$(LAB_RUN)') ./lab/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

lab-docker-build: docker-up ## build the docker guest: trixie + its kernel + forky's docker.io (cached under $(LAB_DOCKER_OUT)), and the plugin's rootfs
	scripts/lab-docker-build.sh

# The lab package's TestMain asks for a kernel and an initrd: the docker guest's stand in (its test
# boots only those), so that this target never rebuilds $(LAB_DIR)/lab under a running `make lab`.
# The docker guests' tests: $(call lab_docker_test,TestName,timeout).
lab_docker_test = $(WITH_CEPH_ENV) set -a && . $(LAB_DOCKER_OUT)/env && set +a && \
	  LAB_KERNEL=$$LAB_DOCKER_KERNEL LAB_INITRD=$$LAB_DOCKER_INITRD \
	  $(GO) test -count=1 -timeout $(2) -tags '$(GOTAGS) lab labdocker' -v -run '^$(1)$$' ./lab/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

lab-docker: ceph-up lab-docker-build ## the managed plugin (MAPPER=krbd) under the real dockerd in a QEMU guest (TestDockerGuest), driven by the docker CLI
	$(call lab_docker_test,TestDockerGuest,30m)

lab-swarm: ceph-up lab-docker-build ## two docker guests as a two-node swarm: the worker running a krbd volume is powered off mid-write, the task moves with its data (TestDockerSwarmFailover)
	$(call lab_docker_test,TestDockerSwarmFailover,40m)

lab-swarm-csi: ceph-up lab-docker-build ## two docker guests as a two-node swarm with the CSI plugin: a cluster volume's node is powered off mid-write; after docker node rm --force of it the task moves with its data, the dead node fenced (TestDockerSwarmCSIFailover)
	$(call lab_docker_test,TestDockerSwarmCSIFailover,40m)

lab-grow: ceph-up lab-docker-build ## an ext4 volume grows while a container writes to it (rbd resize from the host) with the plugin as shipped, CAP_SYS_RESOURCE granted (TestDockerGrowExt4)
	$(call lab_docker_test,TestDockerGrowExt4,30m)

lab-upgrade: ceph-up lab-docker-build ## docker plugin disable / upgrade (to a newer build, from a registry on loopback) / enable in a docker guest with volumes not in use; they mount with their data (TestDockerPluginUpgrade)
	$(call lab_docker_test,TestDockerPluginUpgrade,30m)

lab-firstmount: ceph-up lab-docker-build ## first Mount and first 16 MiB write through dockerd with krbd against the same steps by hand, LAB_ROUNDS rounds (TestDockerFirstMount)
	$(call lab_docker_test,TestDockerFirstMount,60m)

.PHONY: bench
bench: ceph-up openstack-up ## benchmarks against the raw tools (about 15 min); writes docs/BENCHMARKS.md
	scripts/bench.sh

.PHONY: bench-scale
bench-scale: ceph-up openstack-up ## the scale benchmarks (Get cost before/after, List of 100k, N hosts, restart with many volumes; about 20 min); writes their section of docs/BENCHMARKS.md
	scripts/bench-scale.sh

down: ## stop every service the targets started (data kept; the scripts' --purge deletes it)
	scripts/docker-down.sh
	scripts/openstack-down.sh
	scripts/ceph-down.sh
