//go:build integration

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
)

// The CSI sanity suite counts every volume ListVolumes returns before and after it creates one,
// and the lab's Ceph and Cinder are shared by concurrent test runs: each backend's plugin gets a
// space of its own, made (idempotently) with the lab's admin credentials, and used with
// least-privilege credentials of its own.

// Names of the sanity suite's own spaces.
const (
	sanityPool    = "cdp-csi-sanity" // RADOS pool, and cephx user client.cdp-csi-sanity
	sanityProject = "cdp-csi-sanity" // Keystone project, and its only member user
)

// isolatedRBD makes a pool and a cephx user with `profile rbd` on that pool only, and returns
// the settings that select them.
func isolatedRBD(t *testing.T, l lab) []string {
	t.Helper()
	if !strings.Contains(" "+strings.Join(strings.Fields(l.admin(t, "ceph", "osd", "pool", "ls")), " ")+" ", " "+sanityPool+" ") {
		l.admin(t, "ceph", "osd", "pool", "create", sanityPool, "8", "8")
		l.admin(t, "ceph", "osd", "pool", "set", sanityPool, "size", "1", "--yes-i-really-mean-it")
		l.admin(t, "rbd", "pool", "init", sanityPool)
	}
	caps := "profile rbd pool=" + sanityPool
	keyring := l.admin(t, "ceph", "auth", "get-or-create", "client."+sanityPool, "mon", "profile rbd", "osd", caps, "mgr", caps)
	path := filepath.Join(t.TempDir(), "ceph.client."+sanityPool+".keyring")
	if err := os.WriteFile(path, []byte(keyring), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"CEPH_USER=" + sanityPool, "CEPH_KEYRING=" + path, "RBD_POOL=" + sanityPool}
}

// isolatedCinder makes a Keystone project with a user who is a member of it only (so the
// plugin's search of the user's other projects finds nothing else), raises its volume quota,
// and returns the settings that select them. The password is new on every run.
func isolatedCinder(t *testing.T) []string {
	t.Helper()
	admin := plugintest.MustOpenStackAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prov, err := openstack.AuthenticatedClient(ctx, admin.AuthOptions())
	if err != nil {
		t.Fatalf("Keystone admin: %v", err)
	}
	eo := gophercloud.EndpointOpts{Region: admin.Region}
	id, err := openstack.NewIdentityV3(prov, eo)
	if err != nil {
		t.Fatal(err)
	}
	var projectID string
	err = projects.List(id, projects.ListOpts{Name: sanityProject}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		ps, err := projects.ExtractProjects(p)
		for _, pr := range ps {
			projectID = pr.ID
		}
		return false, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if projectID == "" {
		pr, err := projects.Create(ctx, id, projects.CreateOpts{Name: sanityProject, DomainID: "default",
			Description: "ceph-docker-plugin: the CSI sanity suite's own project"}).Extract()
		if err != nil {
			t.Fatalf("create project %s: %v", sanityProject, err)
		}
		projectID = pr.ID
	}
	password := uniq("pw")
	var userID string
	err = users.List(id, users.ListOpts{Name: sanityProject}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		us, err := users.ExtractUsers(p)
		for _, u := range us {
			userID = u.ID
		}
		return false, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if userID == "" {
		u, err := users.Create(ctx, id, users.CreateOpts{Name: sanityProject, DomainID: "default", Password: password,
			DefaultProjectID: projectID}).Extract()
		if err != nil {
			t.Fatalf("create user %s: %v", sanityProject, err)
		}
		userID = u.ID
	} else if _, err := users.Update(ctx, id, userID, users.UpdateOpts{Password: password}).Extract(); err != nil {
		t.Fatalf("set the password of user %s: %v", sanityProject, err)
	}
	var memberID string
	err = roles.List(id, roles.ListOpts{Name: "member"}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		rs, err := roles.ExtractRoles(p)
		for _, r := range rs {
			memberID = r.ID
		}
		return false, err
	})
	if err != nil || memberID == "" {
		t.Fatalf("find role member: %v", err)
	}
	if err := roles.Assign(ctx, id, memberID, roles.AssignOpts{UserID: userID, ProjectID: projectID}).ExtractErr(); err != nil {
		t.Fatalf("make %s a member of %s: %v", sanityProject, sanityProject, err)
	}
	bs, err := openstack.NewBlockStorageV3(prov, eo)
	if err != nil {
		t.Fatal(err)
	}
	vols, gigs := 50, 500
	if _, err := quotasets.Update(ctx, bs, projectID, quotasets.UpdateOpts{Volumes: &vols, Gigabytes: &gigs}).Extract(); err != nil {
		t.Fatalf("raise the quota of %s: %v", sanityProject, err)
	}
	return []string{"BACKEND=cinder", "OS_AUTH_URL=" + admin.AuthURL, "OS_USERNAME=" + sanityProject, "OS_PASSWORD=" + password,
		"OS_PROJECT_NAME=" + sanityProject, "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default",
		"OS_REGION_NAME=" + admin.Region}
}
