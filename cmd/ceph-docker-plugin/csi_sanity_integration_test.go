//go:build integration

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The CSI sanity suite (kubernetes-csi/csi-test pkg/sanity, as published) against the plugin
// binary serving CSI (PROTOCOL=csi) with the fuse mapper and the real lab Ceph, once per backend:
// BACKEND=rbd and BACKEND=cinder with the mount access type, and BACKEND=rbd again with the
// block access type. Ginkgo runs one suite per process, so both backends are
// registered under one suite, each in its own container; the counts per backend, and the reason
// of each skipped case, are printed at the end. Each backend works in a pool or project of its
// own (csi_isolation_integration_test.go): the suite counts every volume the backend lists.
func TestCSISanity(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	type run struct {
		name string
		p    *plugin
		cfg  sanity.TestConfig
	}
	var runs []*run
	rbdEnv := isolatedRBD(t, l)
	for _, b := range []struct {
		name   string
		env    []string
		access string // the suite's volume access type
	}{{"rbd", rbdEnv, "mount"}, {"cinder", isolatedCinder(t), "mount"}, {"rbd-block", rbdEnv, "block"}} {
		p := newPlugin(t, l, uniq("csi-"+b.name), append([]string{"PROTOCOL=csi", "LOG_LEVEL=info"}, b.env...)...)
		endpoint := "unix://" + filepath.Join(p.dir, "csi.sock")
		p.Env = append(p.Env, "CSI_ENDPOINT="+endpoint)
		p.startCSI(endpoint)
		cfg := sanity.NewTestConfig()
		cfg.Address = endpoint
		// Under the plugin's mount root, so that the harness's clean-up unmounts what a failed
		// case leaves.
		cfg.StagingPath = filepath.Join(p.mountRoot(), ".csi", "staging")
		cfg.TargetPath = filepath.Join(p.mountRoot(), ".csi", "target")
		if err := os.MkdirAll(filepath.Join(p.mountRoot(), ".csi"), 0o755); err != nil {
			t.Fatal(err)
		}
		// Cinder makes whole GiB: the suite compares the size it asked for with the size made.
		cfg.TestVolumeSize = 1 << 30
		// Once more with the block access type (the node path differs; the backend's is the same).
		cfg.TestVolumeAccessType = b.access
		runs = append(runs, &run{b.name, p, cfg})
	}
	for _, r := range runs {
		ginkgo.Describe(r.name, func() { sanity.GinkgoTest(&r.cfg) })
	}
	ginkgo.ReportAfterSuite("counts per backend", func(rep ginkgo.Report) {
		for _, r := range runs {
			counts := map[types.SpecState]int{}
			var skips, fails []string
			for _, s := range rep.SpecReports {
				if s.LeafNodeType != types.NodeTypeIt || len(s.ContainerHierarchyTexts) == 0 || s.ContainerHierarchyTexts[0] != r.name {
					continue
				}
				counts[s.State]++
				what := strings.Join(append(s.ContainerHierarchyTexts[1:], s.LeafNodeText), " / ")
				switch s.State {
				case types.SpecStateSkipped:
					skips = append(skips, fmt.Sprintf("%s: %s", what, s.Failure.Message))
				case types.SpecStateFailed, types.SpecStatePanicked, types.SpecStateTimedout:
					fails = append(fails, fmt.Sprintf("%s: %s", what, s.Failure.Message))
				}
			}
			sort.Strings(skips)
			t.Logf("CSI sanity, %s: %d passed, %d failed, %d skipped, %d pending (disabled upstream)",
				r.name, counts[types.SpecStatePassed], len(fails), counts[types.SpecStateSkipped], counts[types.SpecStatePending])
			for _, s := range skips {
				t.Logf("  skipped: %s", s)
			}
			for _, f := range fails {
				t.Logf("  FAILED: %s", f)
			}
			if counts[types.SpecStatePassed] == 0 {
				t.Errorf("BACKEND=%s: no sanity case ran", r.name)
			}
		}
	})
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, rep := ginkgo.GinkgoConfiguration()
	suite.Timeout = 40 * time.Minute
	rep.Succinct = true
	ginkgo.RunSpecs(t, "CSI sanity against ceph-docker-plugin", suite, rep)
	for _, r := range runs {
		r.p.assertClean()
	}
}

// startCSI starts the plugin serving CSI and waits until it answers Probe with ready.
func (p *plugin) startCSI(endpoint string) {
	p.t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		p.t.Fatal(err)
	}
	defer conn.Close()
	id := csi.NewIdentityClient(conn)
	p.startAndWait(func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := id.Probe(ctx, &csi.ProbeRequest{})
		return err == nil && r.GetReady().GetValue()
	})
}
