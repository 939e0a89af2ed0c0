package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
)

// Name is the plugin's key in argo-rollouts-config and in a Rollout's trafficRouting.plugins.
const Name = "weir/weir"

// Config is a Rollout's trafficRouting.plugins["weir/weir"] object.
type Config struct {
	// Replicas are the control addresses (HOST:PORT) of every weir replica; or Service names a headless Service
	// whose every address is a replica, resolved again on every call.
	Replicas []string `json:"replicas,omitempty"`
	Service  string   `json:"service,omitempty"`

	TokenFile   string       `json:"tokenFile,omitempty"`
	TokenSecret *TokenSecret `json:"tokenSecret,omitempty"`
	TLS         TLSConfig    `json:"tls"`

	CanaryVariant string   `json:"canaryVariant,omitempty"`
	StableVariant string   `json:"stableVariant,omitempty"`
	Timeout       Duration `json:"timeout,omitempty"`
	SyncInterval  Duration `json:"syncInterval,omitempty"`

	// ClusterDomain completes the name of a headless experiment Service (NAME.NS.svc.CLUSTERDOMAIN); empty: NAME.NS.svc,
	// which the cluster's DNS search path completes.
	ClusterDomain string `json:"clusterDomain,omitempty"`
}

// TokenSecret names the Kubernetes Secret key that holds weir's control token.
type TokenSecret struct {
	Namespace string `json:"namespace,omitempty"` // default: the Rollout's namespace
	Name      string `json:"name"`
	Key       string `json:"key,omitempty"` // default: token
}

// TLSConfig is the seam for weir's control-tls: the plugin speaks TLS when Enabled.
type TLSConfig struct {
	Enabled            bool   `json:"enabled,omitempty"`
	CAFile             string `json:"caFile,omitempty"`
	ServerName         string `json:"serverName,omitempty"`
	InsecureSkipVerify bool   `json:"insecureSkipVerify,omitempty"`
}

// Duration reads "5s", "250ms", "1m" (or a number of seconds).
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"5s\", got %s", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %v", s, err)
	}
	*d = Duration(v)
	return nil
}

const (
	defaultTimeout      = 5 * time.Second
	defaultSyncInterval = 5 * time.Second
)

var variantRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ParseConfig reads and checks the plugin's object of <ro>.
func ParseConfig(ro *v1alpha1.Rollout) (*Config, error) {
	if ro == nil || ro.Spec.Strategy.Canary == nil || ro.Spec.Strategy.Canary.TrafficRouting == nil {
		return nil, fmt.Errorf("rollout has no canary trafficRouting")
	}
	raw, ok := ro.Spec.Strategy.Canary.TrafficRouting.Plugins[Name]
	if !ok {
		return nil, fmt.Errorf("rollout has no trafficRouting.plugins[%q]", Name)
	}
	return parseConfigJSON(raw, ro.Namespace)
}

func parseConfigJSON(raw []byte, namespace string) (*Config, error) {
	var c Config
	// A misspelt or wrongly-cased field would otherwise silently fall back to a default: encoding/json skips unknown
	// keys, and matches the known ones case-insensitively.
	if err := exactKeys(raw, reflect.TypeOf(c), ""); err != nil {
		return nil, fmt.Errorf("plugins[%q]: %v", Name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("plugins[%q]: %v", Name, err)
	}
	bad := func(f string, a ...any) (*Config, error) {
		return nil, fmt.Errorf("plugins[%q]: %s", Name, fmt.Sprintf(f, a...))
	}
	if (len(c.Replicas) > 0) == (c.Service != "") {
		return bad("give exactly one of replicas (a list of HOST:PORT) and service (HOST:PORT of a headless Service)")
	}
	addrs := c.Replicas
	if c.Service != "" {
		addrs = []string{c.Service}
	}
	for _, r := range addrs {
		if _, port, err := net.SplitHostPort(r); err != nil {
			return bad("replica %q: want HOST:PORT", r)
		} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return bad("replica %q: bad port", r)
		}
	}
	if (c.TokenFile != "") == (c.TokenSecret != nil) {
		return bad("give exactly one of tokenFile and tokenSecret")
	}
	if s := c.TokenSecret; s != nil {
		if s.Name == "" {
			return bad("tokenSecret.name is empty")
		}
		if s.Namespace == "" {
			s.Namespace = namespace
		}
		if s.Key == "" {
			s.Key = "token"
		}
	}
	if c.CanaryVariant == "" {
		c.CanaryVariant = "canary"
	}
	if c.StableVariant == "" {
		c.StableVariant = "stable"
	}
	for _, v := range []string{c.CanaryVariant, c.StableVariant} {
		if !variantRe.MatchString(v) {
			return bad("variant name %q does not match [a-z0-9][a-z0-9-]{0,31}", v)
		}
	}
	if c.CanaryVariant == c.StableVariant {
		return bad("canaryVariant and stableVariant are both %q", c.CanaryVariant)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(defaultTimeout)
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = Duration(defaultSyncInterval)
	}
	if c.ClusterDomain != "" && !domainRe.MatchString(c.ClusterDomain) {
		return bad("clusterDomain %q is not a DNS domain such as cluster.local", c.ClusterDomain)
	}
	if c.Timeout < 0 || c.SyncInterval < 0 {
		return bad("timeout and syncInterval must be positive")
	}
	return &c, nil
}

var domainRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// exactKeys refuses a key of the JSON object <raw> (and of its nested objects) that is not, exactly, the JSON name of a
// field of struct type <t>. <at> names the object in the message.
func exactKeys(raw []byte, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil // not an object: the decoder names the type mismatch
	}
	fields := make(map[string]reflect.Type)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	for k, v := range obj {
		ft, ok := fields[k]
		if !ok {
			hint := ""
			for name := range fields {
				if strings.EqualFold(name, k) {
					hint = fmt.Sprintf(" (did you mean %q?)", name)
				}
			}
			return fmt.Errorf("unknown field %q%s", at+k, hint)
		}
		if err := exactKeys(v, ft, at+k+"."); err != nil {
			return err
		}
	}
	return nil
}

// D is the duration as time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
