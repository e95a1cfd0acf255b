package cinder

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// othersTTL is how long the list of other projects is trusted.
const othersTTL = time.Minute

// client returns a Cinder v3 client scoped to projectID ("" for the configured project).
func (p *Provisioner) client(ctx context.Context, projectID string) (*gophercloud.ServiceClient, error) {
	p.mu.Lock()
	c := p.clients[projectID]
	p.mu.Unlock()
	if c != nil {
		return c, nil
	}
	opts := p.cfg.Auth
	if projectID != "" {
		opts.TenantID, opts.TenantName = "", ""
		opts.Scope = &gophercloud.AuthScope{ProjectID: projectID}
	}
	provider, err := openstack.NewClient(opts.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: OS_AUTH_URL %q: %v", driver.ErrInvalid, opts.IdentityEndpoint, err)
	}
	if p.cfg.CACert != "" {
		pem, err := os.ReadFile(p.cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("OS_CACERT: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: OS_CACERT %s holds no PEM certificate", driver.ErrInvalid, p.cfg.CACert)
		}
		provider.HTTPClient = http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	if err := openstack.Authenticate(ctx, provider, opts); err != nil {
		if projectID != "" && gophercloud.ResponseCodeIs(err, http.StatusUnauthorized) {
			// Keystone answers 401 both for bad credentials and for a project without a role:
			// if the configured scope works, it is the project.
			if _, derr := p.client(ctx, ""); derr == nil {
				return nil, fmt.Errorf("%w: Keystone at %s does not let user %s work in project %s (does the user have a role there?)",
					driver.ErrPermission, opts.IdentityEndpoint, opts.Username, projectID)
			}
		}
		return nil, authError(opts, projectID, err)
	}
	c, err = openstack.NewBlockStorageV3(provider, gophercloud.EndpointOpts{Region: p.cfg.Region})
	if err != nil {
		return nil, fmt.Errorf("cinder: no block-storage v3 endpoint in the Keystone catalog (region %q): %w", p.cfg.Region, err)
	}
	c.Microversion = microversion
	var ident *gophercloud.ServiceClient
	home := ""
	if projectID == "" {
		if ident, err = openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{Region: p.cfg.Region}); err != nil {
			ident = nil // listing other projects is then not possible; the configured one works
		}
		if r, ok := provider.GetAuthResult().(tokens.CreateResult); ok {
			if proj, err := r.ExtractProject(); err == nil && proj != nil {
				home = proj.ID
			}
		}
	}
	p.mu.Lock()
	p.clients[projectID] = c
	if projectID == "" {
		p.identity, p.home = ident, home
	}
	p.mu.Unlock()
	return c, nil
}

// otherProjects lists the projects other than the configured one that the credentials can
// work in. A failure to list (an application credential is bound to its project) means none.
func (p *Provisioner) otherProjects(ctx context.Context) []string {
	p.mu.Lock()
	ident, home, others, at := p.identity, p.home, p.others, p.othersAt
	p.mu.Unlock()
	if ident == nil || time.Since(at) < othersTTL {
		return others
	}
	var ids []string
	err := projects.ListAvailable(ident).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		ps, err := projects.ExtractProjects(page)
		for _, pr := range ps {
			if pr.ID != home && pr.Enabled {
				ids = append(ids, pr.ID)
			}
		}
		return true, err
	})
	if err != nil {
		ids = others // keep what was known; try again next time
	}
	sort.Strings(ids)
	p.mu.Lock()
	p.others, p.othersAt = ids, time.Now()
	p.mu.Unlock()
	return ids
}

// authError explains a failed authentication without ever including the secret.
func authError(opts gophercloud.AuthOptions, projectID string, err error) error {
	who := "user " + opts.Username
	if opts.ApplicationCredentialID != "" {
		who = "application credential " + opts.ApplicationCredentialID
	}
	scope := "the configured project"
	if projectID != "" {
		scope = "project " + projectID
	}
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return fmt.Errorf("%w: Keystone at %s refused the credentials of %s (check OS_USERNAME/OS_PASSWORD or the application credential)",
			driver.ErrPermission, opts.IdentityEndpoint, who)
	case gophercloud.ResponseCodeIs(err, http.StatusForbidden), gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("%w: Keystone at %s does not let %s work in %s (does it have a role there?)",
			driver.ErrPermission, opts.IdentityEndpoint, who, scope)
	}
	return fmt.Errorf("Keystone at %s unreachable or failing: %w", opts.IdentityEndpoint, unreachable(err))
}

// unreachable marks network errors and deadline expiry as driver.ErrTimeout.
func unreachable(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%w: %w", driver.ErrTimeout, err)
	}
	return err
}

// apiError translates a Cinder API error.
func apiError(op, what string, err error) error {
	// A token that expired and could not be renewed: gophercloud's error does not unwrap, so
	// judge by Keystone's answer to the renewal (credentials rotated or revoked, role removed,
	// Keystone down or past the deadline), not as a failure of Cinder.
	var reauth *gophercloud.ErrUnableToReauthenticate
	if errors.As(err, &reauth) {
		for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound} {
			if gophercloud.ResponseCodeIs(reauth.ErrReauth, code) {
				return fmt.Errorf("cinder %s %s: %w: Keystone refused to renew the token (were the credentials changed or revoked, or the role removed?): %v",
					op, what, driver.ErrPermission, reauth.ErrReauth)
			}
		}
		return fmt.Errorf("cinder %s %s: Keystone unreachable or failing while renewing the token: %w", op, what, unreachable(reauth.ErrReauth))
	}
	switch {
	case err == nil:
		return nil
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrNotFound, err)
	case gophercloud.ResponseCodeIs(err, http.StatusForbidden), gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrPermission, err)
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrInUse, err)
	case gophercloud.ResponseCodeIs(err, http.StatusRequestEntityTooLarge): // Cinder's OverLimit: a quota
		return fmt.Errorf("cinder %s %s: %w (%w): %v", op, what, driver.ErrInvalid, driver.ErrNoSpace, err)
	case gophercloud.ResponseCodeIs(err, http.StatusBadRequest):
		return fmt.Errorf("cinder %s %s: %w: %v", op, what, driver.ErrInvalid, err)
	}
	return fmt.Errorf("cinder %s %s: Cinder unreachable or failing: %w", op, what, unreachable(err))
}
