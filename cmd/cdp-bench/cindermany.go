package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Cinder mode with many volumes in the project. A project of the bench's own (so that the lab
// project's other users never list them) holds -cinder-many volumes, created through Cinder's
// API (1 GiB each, named bench-many-NNNN); the plugin (the lab's demo user, scoped to that project)
// answers List and Get while the counting proxies of cindercost count its requests.

const manyProject = "cdp-bench-many"

type cinderManyResult struct {
	want, have       int
	create           time.Duration
	created, removed int
	errored          int // volumes Cinder put in error (no capacity left on the lab's backend)
	list, get        cinderCostRow
	listed           int
}

func (b *bench) cinderMany(ctx context.Context) error {
	n := b.o.scale.cinderMany
	res := &cinderManyResult{want: n}
	scaleRes.cinderMany = res
	admin, err := readEnvFile(filepath.Join(filepath.Dir(filepath.Dir(b.env.conf)), "openstack", "admin-env"))
	if err != nil {
		admin, err = readEnvFile("/var/lib/ceph-docker-plugin-lab/openstack/admin-env")
	}
	if err != nil {
		return fmt.Errorf("the lab's Keystone admin credentials: %w", err)
	}
	if err := ensureManyProject(ctx, admin, n); err != nil {
		return err
	}
	c, err := projectClient(ctx, manyProject)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	err = volumes.List(c, volumes.ListOpts{Limit: 1000}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(page)
		for _, v := range vs {
			have[v.Name] = true
		}
		return true, err
	})
	if err != nil {
		return err
	}
	name := func(i int) string { return fmt.Sprintf("bench-many-%04d", i) }
	var todo []int
	for i := 0; i < n; i++ {
		if !have[name(i)] {
			todo = append(todo, i)
		}
	}
	res.have = n - len(todo)
	start := time.Now()
	var made atomic.Int64
	errs := parallel(ctx, 8, len(todo), func(k int) error {
		_, err := volumes.Create(ctx, c, volumes.CreateOpts{Name: name(todo[k]), Size: 1}, nil).Extract()
		if made.Add(1)%200 == 0 {
			logf("cindermany: %d/%d volumes created", made.Load(), len(todo))
		}
		return err
	})
	res.create, res.created = time.Since(start), len(todo)-len(errs)
	if len(errs) > 0 {
		return fmt.Errorf("creating %d volumes in project %s: %d failed: %w", len(todo), manyProject, len(errs), errs[0])
	}
	if res.errored, err = waitSettled(ctx, c); err != nil {
		return err
	}
	logf("cindermany: %d volumes in project %s (%d made in %s)", n, manyProject, res.created, res.create.Round(time.Second))
	if !b.o.scale.cinderManyKeep {
		defer func() {
			start := time.Now()
			errs := parallel(context.Background(), 8, n, func(i int) error {
				return b.deleteNamed(context.Background(), c, name(i))
			})
			res.removed = n - len(errs)
			logf("cindermany: deleted %d volumes in %s (%d errors)", res.removed, time.Since(start).Round(time.Second), len(errs))
		}()
	}

	cinderProxy, ksProxy, authPath, err := countingProxies(ctx)
	if err != nil {
		return err
	}
	defer cinderProxy.close()
	defer ksProxy.close()
	p := newPlugin(b.o.bin, b.o.work, "bench-many", "BACKEND=cinder", "CEPH_CONF="+b.env.conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring, "OS_AUTH_URL="+ksProxy.url()+authPath, "OS_PROJECT_NAME="+manyProject)
	if _, err := p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	measure := func(row *cinderCostRow, runs int, fn func() error) error {
		if err := fn(); err != nil {
			return err
		}
		ksProxy.take()
		cinderProxy.take()
		row.calls = runs
		for i := 0; i < runs; i++ {
			if err := timed(&row.lat, fn); err != nil {
				return err
			}
		}
		kn, _, _ := ksProxy.take()
		cn, clat, _ := cinderProxy.take()
		row.keystone, row.cinder, row.cinderLat = float64(kn)/float64(runs), float64(cn)/float64(runs), clat
		return nil
	}
	res.list.call, res.get.call = "List", "Get"
	if err := measure(&res.list, 10, func() error {
		var err error
		res.listed, err = p.list()
		return err
	}); err != nil {
		return err
	}
	if res.listed < n {
		return fmt.Errorf("List answered %d volumes, want >= %d", res.listed, n)
	}
	if err := measure(&res.get, 50, func() error { return p.get(name(rand.IntN(n))) }); err != nil {
		return err
	}
	logf("cindermany: List of %d p50 %s p95 %s; Get p50 %s p95 %s", res.listed, ms(res.list.lat.p50()), ms(res.list.lat.p95()), ms(res.get.lat.p50()), ms(res.get.lat.p95()))
	return nil
}

// deleteNamed deletes the project's volume called name.
func (b *bench) deleteNamed(ctx context.Context, c *gophercloud.ServiceClient, name string) error {
	var ids []string
	err := volumes.List(c, volumes.ListOpts{Name: name}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(page)
		for _, v := range vs {
			ids = append(ids, v.ID)
		}
		return true, err
	})
	for _, id := range ids {
		if derr := volumes.Delete(ctx, c, id, volumes.DeleteOpts{}).ExtractErr(); derr != nil && err == nil {
			err = derr
		}
	}
	return err
}

// waitSettled waits until no volume of the project is still being created (at most 10 minutes)
// and returns how many are in error.
func waitSettled(ctx context.Context, c *gophercloud.ServiceClient) (int, error) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		busy, errored := 0, 0
		err := volumes.List(c, volumes.ListOpts{Limit: 1000}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			vs, err := volumes.ExtractVolumes(page)
			for _, v := range vs {
				switch {
				case v.Status == "creating":
					busy++
				case strings.HasPrefix(v.Status, "error"):
					errored++
				}
			}
			return true, err
		})
		if err != nil || busy == 0 {
			return errored, err
		}
		if time.Now().After(deadline) {
			return errored, fmt.Errorf("%d volumes of project %s still creating after 10 minutes", busy, manyProject)
		}
		time.Sleep(2 * time.Second)
	}
}

// ensureManyProject makes the bench's project (the demo user a member, quotas for n volumes).
func ensureManyProject(ctx context.Context, admin map[string]string, n int) error {
	opts := gophercloud.AuthOptions{IdentityEndpoint: admin["OS_AUTH_URL"], Username: admin["OS_USERNAME"], Password: admin["OS_PASSWORD"],
		DomainName: envOrMap(admin, "OS_USER_DOMAIN_NAME", "Default"),
		Scope:      &gophercloud.AuthScope{ProjectName: admin["OS_PROJECT_NAME"], DomainName: envOrMap(admin, "OS_PROJECT_DOMAIN_NAME", "Default")}}
	provider, err := openstack.AuthenticatedClient(ctx, opts)
	if err != nil {
		return fmt.Errorf("keystone as admin: %w", err)
	}
	ks, err := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{Region: admin["OS_REGION_NAME"]})
	if err != nil {
		return err
	}
	var pid string
	pages, err := projects.List(ks, projects.ListOpts{Name: manyProject}).AllPages(ctx)
	if err != nil {
		return err
	}
	if ps, _ := projects.ExtractProjects(pages); len(ps) > 0 {
		pid = ps[0].ID
	} else {
		p, err := projects.Create(ctx, ks, projects.CreateOpts{Name: manyProject, DomainID: "default",
			Description: "cmd/cdp-bench: Cinder mode with many volumes"}).Extract()
		if err != nil {
			return fmt.Errorf("create project %s: %w", manyProject, err)
		}
		pid = p.ID
	}
	userPages, err := users.List(ks, users.ListOpts{Name: os.Getenv("OS_USERNAME")}).AllPages(ctx)
	if err != nil {
		return err
	}
	us, _ := users.ExtractUsers(userPages)
	rolePages, err := roles.List(ks, roles.ListOpts{Name: "member"}).AllPages(ctx)
	if err != nil {
		return err
	}
	rs, _ := roles.ExtractRoles(rolePages)
	if len(us) == 0 || len(rs) == 0 {
		return fmt.Errorf("no user %s or no role member in Keystone", os.Getenv("OS_USERNAME"))
	}
	if err := roles.Assign(ctx, ks, rs[0].ID, roles.AssignOpts{UserID: us[0].ID, ProjectID: pid}).ExtractErr(); err != nil {
		return fmt.Errorf("make %s a member of %s: %w", us[0].Name, manyProject, err)
	}
	bs, err := openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: admin["OS_REGION_NAME"]})
	if err != nil {
		return err
	}
	limit := n + 100
	if _, err := quotasets.Update(ctx, bs, pid, quotasets.UpdateOpts{Volumes: &limit, Gigabytes: &limit}).Extract(); err != nil {
		return fmt.Errorf("quotas of %s: %w", manyProject, err)
	}
	return nil
}

// projectClient is cinderClient scoped to another project.
func projectClient(ctx context.Context, project string) (*gophercloud.ServiceClient, error) {
	opts := gophercloud.AuthOptions{
		IdentityEndpoint: os.Getenv("OS_AUTH_URL"), Username: os.Getenv("OS_USERNAME"), Password: os.Getenv("OS_PASSWORD"),
		DomainName: plugintest.EnvOr("OS_USER_DOMAIN_NAME", "Default"),
		Scope:      &gophercloud.AuthScope{ProjectName: project, DomainName: plugintest.EnvOr("OS_PROJECT_DOMAIN_NAME", "Default")},
	}
	provider, err := openstack.AuthenticatedClient(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("keystone, project %s: %w", project, err)
	}
	return openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: os.Getenv("OS_REGION_NAME")})
}

func envOrMap(m map[string]string, k, def string) string {
	if v := m[k]; v != "" {
		return v
	}
	return def
}

// readEnvFile reads the KEY=VALUE lines of an env file such as scripts/openstack-up.sh writes.
func readEnvFile(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	out := map[string]string{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = strings.Trim(v, `"'`)
		}
	}
	return out, err
}

func (b *bench) reportCinderMany(w *strings.Builder) {
	r := scaleRes.cinderMany
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("### Cinder mode with many volumes in the project\n\n")
	p("A project of the bench's own (`%s`, the lab's demo user a member) holding %d volumes of 1 GiB made through\n", manyProject, r.want)
	p("Cinder's API (%d already there from an earlier run, %d made now with 8 clients in %s); the plugin runs with\n", r.have, r.created, r.create.Round(time.Second))
	if r.errored > 0 {
		defer p("**%d of the %d are in Cinder's `error` state**: the scheduler found no room for them on the lab's backend\n"+
			"(one 10 GiB OSD; with Cinder's default over-subscription ratio it admits about 170 volumes of 1 GiB, fewer\n"+
			"with the other tests' volumes). They are rows of the project like the others for what is measured here:\n"+
			"Cinder answers List and a Get by name from its database, without asking the backend.\n\n", r.errored, r.want)
	}
	p("`BACKEND=cinder` scoped to it, behind the counting proxies of the table above. List: 10 runs; Get: 50, of\n")
	p("random volumes.\n\n")
	p("| call | p50 / p95 | Keystone requests per call | Cinder requests per call | Cinder request p50 / p95 |\n|---|---|---|---|---|\n")
	for _, row := range []cinderCostRow{r.list, r.get} {
		if row.calls == 0 {
			continue
		}
		what := row.call
		if row.call == "List" {
			what = fmt.Sprintf("List (%d volumes)", r.listed)
		}
		p("| %s | %s / %s | %.2f | %.2f | %s / %s |\n", what, ms(row.lat.p50()), ms(row.lat.p95()), row.keystone, row.cinder, ms(row.cinderLat.p50()), ms(row.cinderLat.p95()))
	}
	p("\n")
}
