package e2e

// No kubelet and no kube-controller-manager run here. This loop plays their part for the ReplicaSets the Argo
// Rollouts controller creates: every ReplicaSet's status follows its spec (all replicas ready and available, the
// generation observed), as if its pods started at once. The pods themselves are the two weir-upstream processes
// that weir's stable and canary point at; nothing else is faked.

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

type workloads struct {
	kube kubernetes.Interface
	ns   string
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs int
}

func startWorkloads(kube kubernetes.Interface, ns string) *workloads {
	w := &workloads{kube: kube, ns: ns, stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
				w.sync()
			}
		}
	}()
	return w
}

func (w *workloads) sync() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := w.kube.AppsV1().ReplicaSets(w.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		w.mu.Lock()
		w.errs++
		w.mu.Unlock()
		return
	}
	for i := range list.Items {
		rs := &list.Items[i]
		want := int32(1)
		if rs.Spec.Replicas != nil {
			want = *rs.Spec.Replicas
		}
		s := &rs.Status
		if s.Replicas == want && s.ReadyReplicas == want && s.AvailableReplicas == want &&
			s.FullyLabeledReplicas == want && s.ObservedGeneration == rs.Generation {
			continue
		}
		s.Replicas, s.ReadyReplicas, s.AvailableReplicas, s.FullyLabeledReplicas = want, want, want, want
		s.ObservedGeneration = rs.Generation
		// A conflict means the controller changed it meanwhile: the next tick sees the new spec.
		w.kube.AppsV1().ReplicaSets(w.ns).UpdateStatus(ctx, rs, metav1.UpdateOptions{})
	}
}

func (w *workloads) close() {
	close(w.stop)
	w.wg.Wait()
}
