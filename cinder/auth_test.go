package cinder

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

func TestAuthErrors(t *testing.T) {
	cases := []struct {
		name  string
		setup func(f *fakeOpenStack, cfg *Config)
		err   error
		says  []string
	}{{
		name:  "wrong password",
		setup: func(f *fakeOpenStack, cfg *Config) { cfg.Auth.Password = "not-the-password" },
		err:   driver.ErrPermission,
		says:  []string{"Keystone at %KS/v3 refused the credentials of user demo", "check OS_USERNAME/OS_PASSWORD"},
	}, {
		name: "wrong application credential",
		setup: func(f *fakeOpenStack, cfg *Config) {
			cfg.Auth = gophercloud.AuthOptions{IdentityEndpoint: f.ks.URL + "/v3", ApplicationCredentialID: "ac-1", ApplicationCredentialSecret: "wrong"}
		},
		err:  driver.ErrPermission,
		says: []string{"refused the credentials of application credential ac-1"},
	}, {
		name: "no role in the configured project: Keystone's 401 reads as refused credentials",
		setup: func(f *fakeOpenStack, cfg *Config) {
			f.edit(func() { f.projects[0].Role = false })
		},
		err:  driver.ErrPermission,
		says: []string{"refused the credentials of user demo"},
	}, {
		name: "Keystone forbids the scope",
		setup: func(f *fakeOpenStack, cfg *Config) {
			f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Status: 403, Body: `{"error": {"code": 403, "message": "forbidden", "title": "Forbidden"}}`})
		},
		err:  driver.ErrPermission,
		says: []string{"does not let user demo work in the configured project (does it have a role there?)"},
	}, {
		name: "Keystone does not know the project",
		setup: func(f *fakeOpenStack, cfg *Config) {
			f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Status: 404, Body: `{"error": {"code": 404, "message": "Could not find project: demo.", "title": "Not Found"}}`})
		},
		err:  driver.ErrPermission,
		says: []string{"does not let user demo work in the configured project"},
	}, {
		name: "Keystone failing",
		setup: func(f *fakeOpenStack, cfg *Config) {
			f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Status: 500, Body: `{"error": {"code": 500, "message": "db down"}}`})
		},
		says: []string{"Keystone at %KS/v3 unreachable or failing"},
	}, {
		name: "Keystone hangs: the deadline",
		setup: func(f *fakeOpenStack, cfg *Config) {
			f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Hang: true})
		},
		err:  driver.ErrTimeout,
		says: []string{"Keystone at %KS/v3 unreachable or failing"},
	}, {
		name: "Keystone not listening",
		setup: func(f *fakeOpenStack, cfg *Config) {
			dead := httptest.NewServer(http.NotFoundHandler())
			dead.Close()
			cfg.Auth.IdentityEndpoint = dead.URL + "/v3"
		},
		says: []string{"unreachable or failing", "connection refused"},
	}, {
		name:  "an OS_AUTH_URL that is no URL",
		setup: func(f *fakeOpenStack, cfg *Config) { cfg.Auth.IdentityEndpoint = "://keystone" },
		err:   driver.ErrInvalid,
		says:  []string{`OS_AUTH_URL "://keystone"`},
	}, {
		name:  "no block-storage endpoint in the catalog",
		setup: func(f *fakeOpenStack, cfg *Config) { f.edit(func() { f.noCinder = true }) },
		says:  []string{"no block-storage v3 endpoint in the Keystone catalog (region \"RegionOne\")"},
	}, {
		name:  "another region",
		setup: func(f *fakeOpenStack, cfg *Config) { cfg.Region = "RegionTwo" },
		says:  []string{"no block-storage v3 endpoint in the Keystone catalog (region \"RegionTwo\")"},
	}, {
		name:  "OS_CACERT missing",
		setup: func(f *fakeOpenStack, cfg *Config) { cfg.CACert = filepath.Join(t.TempDir(), "none.pem") },
		err:   os.ErrNotExist,
		says:  []string{"OS_CACERT"},
	}, {
		name: "OS_CACERT without a certificate",
		setup: func(f *fakeOpenStack, cfg *Config) {
			cfg.CACert = filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(cfg.CACert, []byte("not PEM\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		err:  driver.ErrInvalid,
		says: []string{"holds no PEM certificate"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.addVolume(projDemo, "db")
			cfg := f.config("host-a")
			tc.setup(f, &cfg)
			p := New(cfg)
			_, err := p.Get(f.ctx(t), "db")
			var says []string
			for _, s := range tc.says {
				says = append(says, strings.ReplaceAll(s, "%KS", f.ks.URL))
			}
			if tc.err == nil {
				if err == nil {
					t.Fatal("no error")
				}
				wantErr(t, err, err, says...)
				for _, s := range []error{driver.ErrPermission, driver.ErrNotFound} {
					if errors.Is(err, s) {
						t.Errorf("error %q is %v", err, s)
					}
				}
			} else {
				wantErr(t, err, tc.err, says...)
			}
			if strings.Contains(err.Error(), fakePassword) || strings.Contains(err.Error(), "not-the-password") ||
				strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error shows a secret: %v", err)
			}
			if n := f.count("cinder", "GET", ".*"); n != 0 {
				t.Errorf("%d Cinder calls without a token", n)
			}
			// The other calls fail the same way.
			if _, lerr := p.List(f.ctx(t)); lerr == nil || (tc.err != nil && !errors.Is(lerr, tc.err)) {
				t.Errorf("List: %v", lerr)
			}
		})
	}
}

func TestApplicationCredential(t *testing.T) {
	f := newFake(t)
	f.edit(func() { f.appCreds["ac-1"] = "s3cret" })
	f.addVolume(projDemo, "db")
	f.addVolume(projDemo2, "elsewhere")
	cfg := f.config("host-a")
	cfg.Auth = gophercloud.AuthOptions{IdentityEndpoint: f.ks.URL + "/v3", ApplicationCredentialID: "ac-1", ApplicationCredentialSecret: "s3cret"}
	p := New(cfg)
	v, err := p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	if v.Status["project-id"] != projDemo {
		t.Errorf("project %v", v.Status["project-id"])
	}
	toks := f.find("keystone", "POST", "/v3/auth/tokens")
	if len(toks) != 1 || str(toks[0].Body, "auth", "identity", "application_credential", "id") != "ac-1" {
		t.Errorf("token requests %v", toks)
	}
}

// TestTokenExpiry: a token that expires is replaced and the call made again, for Cinder and
// for Keystone's project list alike.
func TestTokenExpiry(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "db")
	f.addVolume(projDemo2, "elsewhere")
	p := f.prov("host-a")
	ctx := withTimeout(t, 5*time.Second)
	if _, err := p.Get(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	f.expireTokens()
	if _, err := p.Get(ctx, "db"); err != nil {
		t.Fatalf("after the token expired: %v", err)
	}
	if n := f.count("keystone", "POST", "/v3/auth/tokens"); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
	if n := f.count("cinder", "GET", "/volumes/detail"); n != 3 {
		t.Errorf("%d lists, want 3 (one refused with the expired token, then again)", n)
	}
	// The project list and the other project's client re-authenticate too.
	f.expireTokens()
	f.resetCalls()
	v, err := p.Get(ctx, "elsewhere")
	wantErr(t, err, nil)
	if v.Status["project-id"] != projDemo2 {
		t.Errorf("found in %v", v.Status["project-id"])
	}
	f.expireTokens()
	if _, err := p.Get(ctx, "elsewhere"); err != nil {
		t.Fatalf("after the other project's token expired: %v", err)
	}
	// A request refused after a renewal is judged by its own answer: an attachment already gone.
	var expire sync.Once // the token expires right before the delete
	f.scriptFunc("cinder", "DELETE", "/attachments/.*", func(http.ResponseWriter, fakeCall) bool {
		expire.Do(f.expireTokens)
		return false
	})
	f.resetCalls()
	wantErr(t, p.Detach(ctx, "db", driver.Attachment{ID: "0f2c5a1e-9d8b-4c7a-8e6f-5d4c3b2a1908"}), nil)
	if n := f.count("cinder", "DELETE", "/attachments/.*"); n != 2 {
		t.Errorf("%d attachment deletes, want 2 (refused with the expired token, then 404)", n)
	}
}

// TestTokenRenewalFails: a token that cannot be renewed is Keystone's refusal or failure, not
// Cinder's.
func TestTokenRenewalFails(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "db")
	p := f.prov("host-a")
	if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
		t.Fatal(err)
	}
	// The password changed meanwhile: refused credentials.
	f.edit(func() { f.password = "changed" })
	f.expireTokens()
	_, err := p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, driver.ErrPermission, "cinder list db", "Keystone refused to renew the token")
	if strings.Contains(err.Error(), fakePassword) || strings.Contains(err.Error(), "Cinder unreachable") {
		t.Errorf("error %q", err)
	}
	// Keystone fails to renew it.
	f.edit(func() { f.password = fakePassword })
	f.script("keystone", "POST", "/v3/auth/tokens", 1, fakeReply{Status: 503, Body: `{"error": {"code": 503, "message": "down"}}`})
	_, err = p.Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, err, "cinder list db", "Keystone unreachable or failing while renewing the token")
	if errors.Is(err, driver.ErrPermission) || errors.Is(err, driver.ErrTimeout) {
		t.Errorf("error %q", err)
	}
	// Keystone hangs while renewing it: the deadline.
	f.script("keystone", "POST", "/v3/auth/tokens", 1, fakeReply{Hang: true})
	_, err = p.Get(f.ctx(t), "db")
	wantErr(t, err, driver.ErrTimeout, "Keystone unreachable or failing while renewing the token")
	// Renewed at last.
	if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
		t.Fatalf("once Keystone answers again: %v", err)
	}
}

// TestTLS: Keystone and Cinder over HTTPS, trusted through OS_CACERT.
func TestTLS(t *testing.T) {
	f := newFakeOn(t, true)
	f.addVolume(projDemo, "db")
	cfg := f.config("host-a")
	// Without the CA, the certificate is refused.
	if _, err := New(cfg).Get(withTimeout(t, 5*time.Second), "db"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	cfg.CACert = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.ks.Certificate().Raw})
	if err := os.WriteFile(cfg.CACert, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := New(cfg).Get(withTimeout(t, 5*time.Second), "db")
	wantErr(t, err, nil)
	if v.Name != "db" || f.count("cinder", "GET", "/volumes/detail") != 1 {
		t.Errorf("Get over TLS: %+v", v)
	}
}

// TestNoIdentityEndpoint: without an identity endpoint in the catalog, other projects cannot be
// listed; the configured one works.
func TestNoIdentityEndpoint(t *testing.T) {
	f := newFake(t)
	f.edit(func() { f.noIdentity = true })
	f.addVolume(projDemo, "db")
	f.addVolume(projDemo2, "elsewhere")
	p := f.prov("host-a")
	if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
		t.Fatal(err)
	}
	_, err := p.Get(withTimeout(t, 5*time.Second), "elsewhere")
	wantErr(t, err, driver.ErrNotFound)
	vs, err := p.List(withTimeout(t, 5*time.Second))
	wantErr(t, err, nil)
	if len(vs) != 1 || vs[0].Name != "db" || f.count("keystone", "GET", "/v3/auth/projects") != 0 {
		t.Errorf("List %+v", vs)
	}
}

// TestListOtherProjectAuthFails: List stops at a project whose token cannot be had for another
// reason than a missing role.
func TestListOtherProjectAuthFails(t *testing.T) {
	f := newFake(t)
	f.addVolume(projDemo, "db")
	p := f.prov("host-a")
	if _, err := p.Get(withTimeout(t, 5*time.Second), "db"); err != nil {
		t.Fatal(err)
	}
	f.script("keystone", "POST", "/v3/auth/tokens", -1, fakeReply{Status: 500, Body: `{"error": {"code": 500, "message": "boom"}}`})
	_, err := p.List(withTimeout(t, 5*time.Second))
	wantErr(t, err, err, "Keystone at "+f.ks.URL+"/v3 unreachable or failing")
}

func TestAPIError(t *testing.T) {
	code := func(c int) error {
		return gophercloud.ErrUnexpectedResponseCode{Method: "GET", URL: "http://cinder/x", Actual: c, Body: []byte(`{"badRequest": {"message": "m"}}`)}
	}
	cases := []struct {
		err  error
		want error
		says string
	}{
		{code(400), driver.ErrInvalid, "cinder op db: invalid argument"},
		{code(401), driver.ErrPermission, "cinder op db: permission denied"},
		{code(403), driver.ErrPermission, ""},
		{code(404), driver.ErrNotFound, ""},
		{code(409), driver.ErrInUse, "cinder op db: in use"},
		{code(413), driver.ErrInvalid, ""},
		{code(413), driver.ErrNoSpace, ""},
		{code(500), nil, "cinder op db: Cinder unreachable or failing"},
		{context.DeadlineExceeded, driver.ErrTimeout, "Cinder unreachable or failing: timed out"},
		{context.Canceled, driver.ErrTimeout, ""},
		{&gophercloud.ErrUnableToReauthenticate{ErrOriginal: code(401), ErrReauth: code(401)}, driver.ErrPermission, "Keystone refused to renew the token"},
		{&gophercloud.ErrUnableToReauthenticate{ErrOriginal: code(401), ErrReauth: context.DeadlineExceeded}, driver.ErrTimeout, "while renewing the token"},
		{&gophercloud.ErrErrorAfterReauthentication{ErrOriginal: code(404)}, driver.ErrNotFound, ""},
	}
	for _, tc := range cases {
		err := apiError("op", "db", tc.err)
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("apiError(%v) = %v, not %v", tc.err, err, tc.want)
		}
		if tc.want == nil {
			for _, s := range []error{driver.ErrInvalid, driver.ErrPermission, driver.ErrNotFound, driver.ErrInUse, driver.ErrTimeout} {
				if errors.Is(err, s) {
					t.Errorf("apiError(%v) = %v, is %v", tc.err, err, s)
				}
			}
		}
		if !strings.Contains(err.Error(), tc.says) {
			t.Errorf("apiError(%v) = %q, does not say %q", tc.err, err, tc.says)
		}
	}
	if apiError("op", "db", nil) != nil {
		t.Error("apiError(nil) is not nil")
	}
}

func TestRoundSizeAndOptions(t *testing.T) {
	p := New(Config{})
	for in, want := range map[uint64]uint64{0: 0, 1: 1 << 30, 1 << 30: 1 << 30, 1<<30 + 1: 2 << 30, 10 << 30: 10 << 30} {
		if got := p.RoundSize(in); got != want {
			t.Errorf("RoundSize(%d) = %d, want %d", in, got, want)
		}
	}
	if got := p.BackendOptions(); !slices.Equal(got, []string{OptProjectID, OptVolumeType, OptAvailabilityZone, OptSnapshotID, OptSourceVolumeID, OptFromVolume}) {
		t.Errorf("BackendOptions %v", got)
	}
	if !p.cfg.Auth.AllowReauth || p.cfg.Poll != 500*time.Millisecond {
		t.Errorf("defaults: AllowReauth %v, Poll %v", p.cfg.Auth.AllowReauth, p.cfg.Poll)
	}
}
