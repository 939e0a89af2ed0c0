package plugin

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kube is the Kubernetes API client, made on first use: a Rollout with a static replica list, a token file and no
// experiment never needs one, so the plugin also runs outside a cluster.
type kube struct {
	once sync.Once
	cs   kubernetes.Interface
	err  error
}

func (k *kube) client() (kubernetes.Interface, error) {
	k.once.Do(func() {
		// The controller's Pod: in-cluster config. Otherwise (the controller run locally): KUBECONFIG or ~/.kube/config.
		cfg, err := rest.InClusterConfig()
		if err != nil {
			rules := clientcmd.NewDefaultClientConfigLoadingRules()
			cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		}
		if err != nil {
			k.err = fmt.Errorf("kubernetes client: %w", err)
			return
		}
		k.cs, k.err = kubernetes.NewForConfig(cfg)
	})
	return k.cs, k.err
}

// token reads the control token from the file or the Secret <cfg> names; trailing newlines and spaces are dropped, as
// weir drops them from its control-token-file.
func (k *kube) token(ctx context.Context, cfg *Config) (string, error) {
	var raw []byte
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return "", fmt.Errorf("tokenFile: %w", err)
		}
		raw = b
	} else {
		s := cfg.TokenSecret
		cs, err := k.client()
		if err != nil {
			return "", err
		}
		sec, err := cs.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("tokenSecret %s/%s: %w", s.Namespace, s.Name, err)
		}
		b, ok := sec.Data[s.Key]
		if !ok {
			return "", fmt.Errorf("tokenSecret %s/%s has no key %q", s.Namespace, s.Name, s.Key)
		}
		raw = b
	}
	t := strings.TrimRight(string(raw), "\r\n ")
	if t == "" {
		return "", fmt.Errorf("control token is empty")
	}
	return t, nil
}

// destination resolves an additional destination's Service to the endpoint weir is given. A Service with a cluster
// IP: CLUSTER-IP:PORT (kube-proxy spreads over its pods), PORT being the Service port named http, else the first. A
// headless one: NAME.NAMESPACE.svc[.CLUSTERDOMAIN]:TARGETPORT, which weir resolves again and again, every address a
// pod; there is no kube-proxy in between, so the port is the pods' (targetPort), which must be a number.
func (k *kube) destination(ctx context.Context, namespace, service, clusterDomain string) (string, error) {
	cs, err := k.client()
	if err != nil {
		return "", err
	}
	svc, err := cs.CoreV1().Services(namespace).Get(ctx, service, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("service %s/%s: %w", namespace, service, err)
	}
	return serviceEndpoint(svc, clusterDomain)
}

// serviceEndpoint: see destination. Without <clusterDomain> a headless Service is named NAME.NAMESPACE.svc, which the
// cluster's DNS search path completes (whatever the cluster's domain is).
func serviceEndpoint(svc *corev1.Service, clusterDomain string) (string, error) {
	if len(svc.Spec.Ports) == 0 {
		return "", fmt.Errorf("service %s/%s has no ports", svc.Namespace, svc.Name)
	}
	sp := svc.Spec.Ports[0]
	for _, p := range svc.Spec.Ports {
		if p.Name == "http" {
			sp = p
			break
		}
	}
	host := svc.Spec.ClusterIP
	if host != "" && host != corev1.ClusterIPNone {
		return net.JoinHostPort(host, fmt.Sprint(sp.Port)), nil
	}
	port := sp.Port // an unset targetPort is the port itself
	switch tp := sp.TargetPort; {
	case tp.Type == intstr.String && tp.StrVal != "":
		return "", fmt.Errorf("headless service %s/%s: port %d has the named targetPort %q; weir reaches its pods "+
			"directly, so give the targetPort as a number", svc.Namespace, svc.Name, sp.Port, tp.StrVal)
	case tp.Type == intstr.Int && tp.IntVal != 0:
		port = tp.IntVal
	}
	host = svc.Name + "." + svc.Namespace + ".svc"
	if clusterDomain != "" {
		host += "." + clusterDomain
	}
	return net.JoinHostPort(host, fmt.Sprint(port)), nil
}

// variantFor names the weir variant of an additional destination after its Service: the name itself when it fits
// weir's variant names (32 characters), else its first 23 characters, '-', and 8 hex digits of its FNV-1a hash.
func variantFor(service string) string {
	v := strings.ToLower(service)
	if variantRe.MatchString(v) {
		return v
	}
	h := fnv.New32a()
	h.Write([]byte(service))
	if len(v) > 23 {
		v = v[:23]
	}
	v = strings.TrimRight(v, "-")
	return fmt.Sprintf("%s-%08x", v, h.Sum32())
}
