"""`citus-pipeline k8s sandbox`: a real three-node Kubernetes on this machine, like kind, from
the pinned release's own binaries (scripts/k8s-control-plane.sh), on which the product deploys
as a user deploys it: control plane as local processes, and per node a network namespace with
its own containerd, runc, kubelet and kube-proxy; CoreDNS, MetalLB and local volumes on top."""
