"""The container images users deploy, built with buildah from their Dockerfiles on a Debian
base made by mmdebstrap: no Docker engine, no registry (`citus-pipeline k8s build-images`)."""
