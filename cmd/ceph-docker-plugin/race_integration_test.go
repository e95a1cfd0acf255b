//go:build integration

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/driver/volclient"
)

// raceRounds is how many times two hosts race their first Mounts of one volume.
const raceRounds = 20

// Two hosts (two plugin instances) race the first Mount of one Cinder volume, again and again,
// with an ordinary volume type and with a multiattach one (which Cinder lets two hosts attach):
// each time exactly one host wins, and the loser leaves nothing behind, neither on its host nor
// in Cinder's attachments (asserted through Cinder's attachments API, which also lists
// attachments that were never completed).
func TestCinderFirstMountRace(t *testing.T) {
	t.Parallel()
	l := labEnv(t)
	for _, vt := range []string{"rbd", "rbd-multiattach"} {
		t.Run(vt, func(t *testing.T) { testCinderFirstMountRace(t, l, vt) })
	}
}

func testCinderFirstMountRace(t *testing.T, l lab, volumeType string) {
	// host-b reaches Keystone and Cinder through lines (test proxies) that can hold its
	// requests back. host-a maps slowly in some rounds of the multiattach volume (a loaded host:
	// its rbd-fuse starts 6 s late), so that its attachment is complete for a while before any Ceph client of it watches
	// the image.
	_, cinderLine, envB := outageLab(t)
	slowMap := t.TempDir()
	real, err := exec.LookPath("rbd-fuse")
	if err != nil {
		t.Fatal(err)
	}
	mapDelay := filepath.Join(slowMap, "delay")
	script := "#!/bin/sh\nsleep $(cat " + mapDelay + ")\nexec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(slowMap, "rbd-fuse"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	envA := append(cinderEnv(t), "PATH="+slowMap+":"+os.Getenv("PATH"))
	hosts := []*plugin{newPlugin(t, l, "host-a", envA...), newPlugin(t, l, "host-b", envB...)}
	for _, h := range hosts {
		h.start()
	}
	name := uniq("race")
	hosts[0].create(name, map[string]string{"size": "1G", "volume-type": volumeType})
	t.Cleanup(func() { _ = hosts[0].try("/VolumeDriver.Remove", map[string]string{"Name": name}, nil) })
	st := hosts[0].get(name).Volume.Status
	id, _ := st["cinder-id"].(string)
	if id == "" || st["volume-type"] != volumeType {
		t.Fatalf("volume %s: status %v, want a Cinder volume of type %s (scripts/openstack/cinder_types.py makes it)", name, st, volumeType)
	}
	var show struct{ Multiattach bool }
	openstackCLI(t, &show, "volume", "show", id)
	if show.Multiattach != strings.HasSuffix(volumeType, "multiattach") {
		t.Fatalf("volume %s of type %s: multiattach=%v", name, volumeType, show.Multiattach)
	}
	bs := blockStorage(t)
	wins, reasons := map[string]int{}, map[string]int{}
	for round := 1; round <= raceRounds; round++ {
		ids := []string{fmt.Sprintf("a%02d%s", round, strings.Repeat("0", 61)), fmt.Sprintf("b%02d%s", round, strings.Repeat("0", 61))}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		// Odd rounds start both at once. Even rounds hold host-b's reservation (POST
		// /attachments) back by 0.5-5 s after it found the volume free, and (multiattach) host-a
		// maps 6 s late: host-a's attachment then completes while host-b waits, and host-b
		// reserves and checks the image's watchers before host-a maps (the window a multiattach
		// volume leaves open: Cinder reserves it again once the first attachment is complete,
		// and the watcher check sees no client yet).
		var hold time.Duration
		delayA := "0"
		if round%2 == 0 {
			hold = time.Duration(500*(round/2)) * time.Millisecond
			if show.Multiattach { // (an ordinary volume is never reserved twice: no need to wait)
				delayA = "6"
			}
		}
		if err := os.WriteFile(mapDelay, []byte(delayA), 0o644); err != nil {
			t.Fatal(err)
		}
		cinderLine.setSlow(func(r *http.Request) time.Duration {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/attachments") {
				return hold
			}
			return 0
		})
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var r mountResp
				errs[i] = h.try("/VolumeDriver.Mount", map[string]string{"Name": name, "ID": ids[i]}, &r)
			}()
		}
		close(start)
		wg.Wait()
		var winner, loser int
		switch {
		case errs[0] == nil && errs[1] == nil:
			t.Fatalf("round %d: both hosts mounted volume %s", round, name)
		case errs[0] != nil && errs[1] != nil:
			t.Fatalf("round %d: neither host mounted volume %s: %v; %v", round, name, errs[0], errs[1])
		case errs[0] == nil:
			winner, loser = 0, 1
		default:
			winner, loser = 1, 0
		}
		w, lo := hosts[winner], hosts[loser]
		wins[w.name]++
		msg := errs[loser].Error()
		switch {
		case strings.Contains(msg, "status must be"):
			reasons["Cinder refused the reservation"]++
		case strings.Contains(msg, "a multiattach volume"):
			reasons["another attachment found after reserving"]++
		case strings.Contains(msg, "is attached to host"):
			reasons["attached to the other host already"]++
		case strings.Contains(msg, "being attached elsewhere"):
			reasons["the other host's attachment pending"]++
		default:
			reasons["other: "+msg]++
		}
		if _, ok := errs[loser].(*volclient.Error); !ok || !strings.Contains(msg, name) {
			t.Fatalf("round %d: %s's refusal %q does not name the volume", round, lo.name, msg)
		}
		// What Docker does after a failed Mount, and what must change nothing.
		lo.unmount(name, ids[loser])
		lo.assertClean()
		atts := cinderAttachments(t, bs, id)
		if len(atts) != 1 || atts[0].Instance != cinder.InstanceUUID(ids[winner]) {
			t.Fatalf("round %d: Cinder's attachments of %s = %+v; want only the winner %s's (instance %s)",
				round, name, atts, w.name, cinder.InstanceUUID(ids[winner]))
		}
		t.Logf("round %d (host-b's reservation held back %v): %s won; %s was refused: %s", round, hold, w.name, lo.name, msg[max(0, len(msg)-200):])
		w.unmount(name, ids[winner])
		w.assertClean()
		if atts := cinderAttachments(t, bs, id); len(atts) != 0 {
			t.Fatalf("round %d: after the winner's unmount, Cinder still has attachments of %s: %+v", round, name, atts)
		}
	}
	t.Logf("volume type %s: %d rounds, wins %v, the losers refused because: %v; no attachment left by a loser",
		volumeType, raceRounds, wins, reasons)
}

// blockStorage is a Cinder v3 client as the lab's Keystone user, at a microversion that lists
// attachments.
func blockStorage(t *testing.T) *gophercloud.ServiceClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: os.Getenv("OS_AUTH_URL"), Username: os.Getenv("OS_USERNAME"), Password: os.Getenv("OS_PASSWORD"),
		DomainName: "Default", Scope: &gophercloud.AuthScope{ProjectName: os.Getenv("OS_PROJECT_NAME"), DomainName: "Default"},
		AllowReauth: true,
	})
	if err != nil {
		t.Fatalf("authenticate as %s: %v", os.Getenv("OS_USERNAME"), err)
	}
	c, err := openstack.NewBlockStorageV3(pc, gophercloud.EndpointOpts{Region: os.Getenv("OS_REGION_NAME")})
	if err != nil {
		t.Fatal(err)
	}
	c.Microversion = "3.44"
	return c
}

// cinderAttachments lists a volume's attachments that are not detached, completed or not.
func cinderAttachments(t *testing.T, c *gophercloud.ServiceClient, volumeID string) []attachments.Attachment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []attachments.Attachment
	err := attachments.List(c, attachments.ListOpts{VolumeID: volumeID}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		as, err := attachments.ExtractAttachments(page)
		for _, a := range as {
			if a.Status != "detached" {
				out = append(out, a)
			}
		}
		return true, err
	})
	if err != nil {
		t.Fatalf("list the attachments of Cinder volume %s: %v", volumeID, err)
	}
	return out
}
