package forge

import (
	"fmt"
	"strings"
)

// Registry maps repositories and webhook routes to the driver of their
// forge host. It is built once from configuration and read-only after:
// safe for concurrent use. A nil *Registry has no drivers.
type Registry struct {
	drivers []Driver
	byHost  map[string]Driver
}

// NewRegistry returns a registry of drivers. Two drivers on the same host
// are an error naming it.
func NewRegistry(drivers ...Driver) (*Registry, error) {
	g := &Registry{byHost: map[string]Driver{}}
	for _, d := range drivers {
		if d == nil {
			continue
		}
		h := strings.ToLower(d.Host())
		if h == "" {
			return nil, fmt.Errorf("forge: %s driver has no host", d.Kind())
		}
		if o, ok := g.byHost[h]; ok {
			return nil, fmt.Errorf("forge: host %s is configured twice (%s and %s)", h, o.Kind(), d.Kind())
		}
		g.byHost[h] = d
		g.drivers = append(g.drivers, d)
	}
	return g, nil
}

// Drivers returns the drivers in configuration order.
func (g *Registry) Drivers() []Driver {
	if g == nil {
		return nil
	}
	return append([]Driver(nil), g.drivers...)
}

// Len returns how many drivers the registry holds.
func (g *Registry) Len() int {
	if g == nil {
		return 0
	}
	return len(g.drivers)
}

// ForRepo returns the driver whose host serves a clone URL, and the
// repository it names there. ok is false for local paths and other hosts.
func (g *Registry) ForRepo(cloneURL string) (d Driver, r Repo, ok bool) {
	if g == nil {
		return nil, Repo{}, false
	}
	for _, d := range g.drivers {
		if r, ok := d.RepoOf(cloneURL); ok {
			return d, r, true
		}
	}
	return nil, Repo{}, false
}

// ForHost returns the driver of host (host[:port], any case).
func (g *Registry) ForHost(host string) (Driver, bool) {
	if g == nil {
		return nil, false
	}
	d, ok := g.byHost[strings.ToLower(host)]
	return d, ok
}

// Route returns the driver a webhook route of kind delivers for: the one
// on host, or, when host is "", the only driver of that kind. ok is false
// when none (or, without a host, several) match.
func (g *Registry) Route(kind Kind, host string) (Driver, bool) {
	if host != "" {
		d, ok := g.ForHost(host)
		if !ok || d.Kind() != kind {
			return nil, false
		}
		return d, true
	}
	ds := g.OfKind(kind)
	if len(ds) != 1 {
		return nil, false
	}
	return ds[0], true
}

// OfKind returns the drivers of kind, in configuration order.
func (g *Registry) OfKind(kind Kind) []Driver {
	if g == nil {
		return nil
	}
	var out []Driver
	for _, d := range g.drivers {
		if d.Kind() == kind {
			out = append(out, d)
		}
	}
	return out
}

// PathSegment reports whether s may be one element of a repository path on
// a forge (an owner, group or repository name) of at most max bytes: ASCII
// letters, digits, '.', '_' and '-', not "." or "..", not starting with '-'.
func PathSegment(s string, max int) bool {
	if s == "" || s == "." || s == ".." || len(s) > max || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
