// Package tfjob holds a Kubeflow TFJob manifest (tfjob.yaml, pvc.yaml) that
// runs gotflow's `ps` and `worker` commands as TFJob replicas; see
// README.md. Its test checks the manifest against the TF_CONFIG the
// training operator derives from it.
package tfjob
