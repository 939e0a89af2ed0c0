// Package manifests checks every YAML document in docker/kubernetes/ and conf/analysis/ against the real
// Kubernetes and Argo Rollouts API types, then checks what the API types alone cannot: Pod Security "restricted",
// pinned images, replicas, preStop, the Services the plugin and the analysis rely on, and that the files agree
// with each other (ports, names, templates, weir.conf).
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	rollouts "github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The directories whose every *.yaml / *.yml file is a set of Kubernetes documents, relative to the repository.
var manifestDirs = []string{"docker/kubernetes", "conf/analysis"}

// doc is one YAML document of a file, decoded into its API type.
type doc struct {
	file  string // relative to the repository
	index int    // 0-based among the file's non-empty documents
	kind  string
	name  string
	obj   any // *appsv1.Deployment, *corev1.Service, ...
}

func (d doc) String() string { return fmt.Sprintf("%s#%d %s/%s", d.file, d.index, d.kind, d.name) }

// newObject returns an empty object of the API type for apiVersion and kind; a kind missing here fails the test,
// so no document can go unchecked.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "rbac.authorization.k8s.io/v1 Role":
		return &rbacv1.Role{}, nil
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		return &rbacv1.RoleBinding{}, nil
	case "argoproj.io/v1alpha1 Rollout":
		return &rollouts.Rollout{}, nil
	case "argoproj.io/v1alpha1 AnalysisTemplate":
		return &rollouts.AnalysisTemplate{}, nil
	case "argoproj.io/v1alpha1 ClusterAnalysisTemplate":
		return &rollouts.ClusterAnalysisTemplate{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: no API type known to this test (add it to newObject)", apiVersion, kind)
}

// strictDecode decodes YAML into v as the API server does with field validation Strict: YAML duplicate keys,
// unknown fields and duplicate fields are errors, and field names are case-sensitive (encoding/json alone would
// take `readOnlyRootFileSystem` for readOnlyRootFilesystem).
func strictDecode(y []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// repoRoot is the repository's top directory (this package lives in tests/manifests).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker", "Dockerfile")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

// manifestFiles lists the YAML files of manifestDirs, sorted.
func manifestFiles(t testing.TB) []string {
	t.Helper()
	root := repoRoot(t)
	var files []string
	for _, dir := range manifestDirs {
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(root, dir, pat))
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range m {
				rel, _ := filepath.Rel(root, f)
				files = append(files, rel)
			}
		}
	}
	sort.Strings(files)
	return files
}

// splitDocs returns the non-empty YAML documents of a file (a document of comments only is empty).
func splitDocs(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var probe any
		if err := yaml.Unmarshal(d, &probe); err != nil {
			return nil, err
		}
		if probe != nil {
			docs = append(docs, d)
		}
	}
}

// decodeDoc decodes one document into its API type.
func decodeDoc(file string, index int, y []byte) (doc, error) {
	d := doc{file: file, index: index}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(y, &tm); err != nil {
		return d, err
	}
	if tm.APIVersion == "" || tm.Kind == "" {
		return d, errors.New("no apiVersion or kind")
	}
	obj, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return d, err
	}
	if err := strictDecode(y, obj); err != nil {
		return d, err
	}
	d.kind, d.obj = tm.Kind, obj
	if m, ok := obj.(metav1.Object); ok {
		d.name = m.GetName()
	}
	if d.name == "" {
		return d, errors.New("no metadata.name")
	}
	return d, nil
}

// loadAll decodes every document of every manifest file; each failure is reported, then the test stops.
func loadAll(t *testing.T) []doc {
	t.Helper()
	root := repoRoot(t)
	files := manifestFiles(t)
	if len(files) == 0 {
		t.Fatalf("no YAML files in %v", manifestDirs)
	}
	var all []doc
	failed := false
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		ys, err := splitDocs(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			failed = true
			continue
		}
		if len(ys) == 0 {
			t.Errorf("%s: no documents", f)
			failed = true
		}
		for i, y := range ys {
			d, err := decodeDoc(f, i, y)
			if err != nil {
				t.Errorf("%s document %d: %v", f, i, err)
				failed = true
				continue
			}
			all = append(all, d)
		}
	}
	if failed {
		t.FailNow()
	}
	return all
}

// find returns the one document of kind and name in the files under dir (a prefix of the file path); it fails the
// test when there is not exactly one.
func find[T any](t *testing.T, docs []doc, dir, kind, name string) T {
	t.Helper()
	var found []T
	for _, d := range docs {
		if d.kind == kind && d.name == name && strings.HasPrefix(d.file, dir) {
			found = append(found, d.obj.(T))
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s named %q under %s, want 1", len(found), kind, name, dir)
	}
	return found[0]
}

// podTemplate is a pod template of a workload document.
type podTemplate struct {
	owner    doc
	replicas *int32
	tmpl     *corev1.PodTemplateSpec
}

func podTemplates(docs []doc) []podTemplate {
	var out []podTemplate
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *appsv1.Deployment:
			out = append(out, podTemplate{d, o.Spec.Replicas, &o.Spec.Template})
		case *rollouts.Rollout:
			out = append(out, podTemplate{d, o.Spec.Replicas, &o.Spec.Template})
		}
	}
	return out
}

// allContainers returns the template's init (sidecar) containers and containers.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}
