package plugin

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
)

// routeSpec is one weir route: its name and the tokens of the request that sets it, in the form `show routes`
// prints it back (so a replica's routes can be compared token by token).
type routeSpec struct {
	Name   string
	Tokens []string
}

var routeNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:~-]{0,62}$`)

// altName is the weir route name of alternative <i> of the Argo route <name>: NAME, NAME~1, NAME~2, ...
func altName(name string, i int) string {
	if i == 0 {
		return name
	}
	return fmt.Sprintf("%s~%d", name, i)
}

// familyOf says whether the weir route <weirName> is an alternative of the Argo route <name>.
func familyOf(weirName, name string) bool {
	if weirName == name {
		return true
	}
	rest, ok := strings.CutPrefix(weirName, name+"~")
	if !ok || rest == "" {
		return false
	}
	for _, ch := range rest {
		if ch < '0' || ch > '9' {
			return false
		}
	}
	return true
}

func checkRouteName(name string, alts int) error {
	last := altName(name, max(alts-1, 0))
	if !routeNameRe.MatchString(name) || !routeNameRe.MatchString(last) || strings.Contains(name, "~") {
		return fmt.Errorf("route name %q: weir route names match [A-Za-z0-9][A-Za-z0-9_.:-]{0,62} "+
			"(with room for ~N when the match lists alternatives)", name)
	}
	return nil
}

// stringMatch turns an Argo StringMatch into weir's OP VALUE.
func stringMatch(what string, m *v1alpha1.StringMatch) (string, string, error) {
	var op, val string
	n := 0
	if m.Exact != "" {
		op, val, n = "exact", m.Exact, n+1
	}
	if m.Prefix != "" {
		op, val, n = "prefix", m.Prefix, n+1
	}
	if m.Regex != "" {
		op, val, n = "regex", m.Regex, n+1
	}
	if n != 1 {
		return "", "", fmt.Errorf("%s: give exactly one of exact, prefix and regex", what)
	}
	if err := checkToken(what+" "+op, val); err != nil {
		return "", "", err
	}
	if op == "regex" {
		ere, err := posixRegex(val)
		if err != nil {
			return "", "", fmt.Errorf("%s regex %q: %w", what, val, err)
		}
		val = ere
	}
	return op, val, nil
}

// headerName checks an HTTP header name (a token) and writes it lower-case, as HTTP compares it.
func headerName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("empty header name")
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if b <= ' ' || b >= 0x7f || strings.IndexByte(`"(),/;<=>?@[\]{}`, b) >= 0 {
			if !(b == ':' && strings.HasPrefix(strings.ToLower(name), "cookie:")) {
				return "", fmt.Errorf("header name %q is not an HTTP token", name)
			}
		}
	}
	return strings.ToLower(name), nil
}

// headerRoutes translates SetHeaderRoute: one weir header route per element of match (Argo's alternatives), each
// sending what it matches to <variant>. An empty match means the route is removed (nil).
func headerRoutes(hr *v1alpha1.SetHeaderRoute, variant string) ([]routeSpec, error) {
	if len(hr.Match) == 0 {
		return nil, nil
	}
	if err := checkRouteName(hr.Name, len(hr.Match)); err != nil {
		return nil, err
	}
	out := make([]routeSpec, 0, len(hr.Match))
	for i, m := range hr.Match {
		name, err := headerName(m.HeaderName)
		if err != nil {
			return nil, fmt.Errorf("setHeaderRoute %s: match %d: %w", hr.Name, i, err)
		}
		if m.HeaderValue == nil {
			return nil, fmt.Errorf("setHeaderRoute %s: match %d: header %s has no headerValue", hr.Name, i, name)
		}
		op, val, err := stringMatch("headerValue", m.HeaderValue)
		if err != nil {
			return nil, fmt.Errorf("setHeaderRoute %s: match %d: header %s: %w", hr.Name, i, name, err)
		}
		n := altName(hr.Name, i)
		out = append(out, routeSpec{Name: n, Tokens: []string{"set", "header-route", n, "to", variant,
			"header", name, op, val}})
	}
	return out, nil
}

// mirrorRoutes translates SetMirrorRoute: one weir mirror route per element of match, with all of that element's
// conditions (method, path, headers in name order); percentage defaults to 100. An empty match removes the route.
func mirrorRoutes(mr *v1alpha1.SetMirrorRoute, variant string) ([]routeSpec, error) {
	if len(mr.Match) == 0 {
		return nil, nil
	}
	if err := checkRouteName(mr.Name, len(mr.Match)); err != nil {
		return nil, err
	}
	pct := int32(100)
	if mr.Percentage != nil {
		pct = *mr.Percentage
	}
	if pct < 0 || pct > 100 {
		return nil, fmt.Errorf("setMirrorRoute %s: percentage %d is not within 0..100", mr.Name, pct)
	}
	out := make([]routeSpec, 0, len(mr.Match))
	for i, m := range mr.Match {
		n := altName(mr.Name, i)
		tok := []string{"set", "mirror-route", n, fmt.Sprintf("%d.00", pct), "to", variant}
		fail := func(err error) ([]routeSpec, error) {
			return nil, fmt.Errorf("setMirrorRoute %s: match %d: %w", mr.Name, i, err)
		}
		if m.Method != nil {
			op, val, err := stringMatch("method", m.Method)
			if err != nil {
				return fail(err)
			}
			// weir matches methods by name only; a prefix or regex would need guessing which methods it means.
			if op != "exact" {
				return fail(fmt.Errorf("method %s %q: weir matches methods exactly (use exact)", op, val))
			}
			if _, err := headerName(val); err != nil || strings.Contains(val, ",") {
				return fail(fmt.Errorf("method %q is not an HTTP method", val))
			}
			tok = append(tok, "method", val)
		}
		if m.Path != nil {
			op, val, err := stringMatch("path", m.Path)
			if err != nil {
				return fail(err)
			}
			tok = append(tok, "path", op, val)
		}
		names := make([]string, 0, len(m.Headers))
		for h := range m.Headers {
			names = append(names, h)
		}
		sort.Strings(names)
		for _, h := range names {
			sm := m.Headers[h]
			lname, err := headerName(h)
			if err != nil {
				return fail(err)
			}
			op, val, err := stringMatch("header "+lname, &sm)
			if err != nil {
				return fail(err)
			}
			tok = append(tok, "header", lname, op, val)
		}
		out = append(out, routeSpec{Name: n, Tokens: tok})
	}
	return out, nil
}
