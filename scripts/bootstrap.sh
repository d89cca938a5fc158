#!/usr/bin/env bash
# Installs what this project needs that a package manager can install. Two levels:
#   scripts/bootstrap.sh        what the main job needs: Debian's postgresql-15, etcd, pgbackrest,
#                               pgbouncer, haproxy, iproute2, uv and the locked environment's main dependencies, and
#                               Citus (below). It runs no `go`, even where Go is installed.
#   scripts/bootstrap.sh --dev  also the test and bench tools: chromium (UI tests, screenshots),
#                               prometheus, its postgres exporter and the pooler's exporter (PyPI,
#                               in a venv on Debian's Python libraries; `--with-metrics`), pgloader
#                               and GNU time (`bench seed`), buildah, mmdebstrap and skopeo
#                               (`k8s build-images`), the CNI plugins and iptables of the sandbox's
#                               nodes, the dev and bench dependency groups, and the pinned
#                               Kubernetes stack of the k8s tests (built with Go into ~/.cache,
#                               minutes the first time, then cached).
# Idempotent: every step checks first, so a second run takes seconds (scripts/test.sh runs the
# --dev level before every test run).
# The citus extension is not packaged by Debian: where citus.so is missing for the PostgreSQL
# found, this tries the Citus project's own package repository; where that fails it stops and
# says what is missing (or, with --citus-optional, warns and goes on: the Citus tests then skip).
# The project never builds Citus itself.
set -euo pipefail

CITUS_OPTIONAL=0
DEV=0
for arg in "$@"; do
  case "$arg" in
    --citus-optional) CITUS_OPTIONAL=1 ;;
    --dev) DEV=1 ;;
    *) echo "usage: $0 [--dev] [--citus-optional]" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

# 1. Debian packages -----------------------------------------------------------------------
need=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15 postgresql-client-15)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
[ -x /usr/bin/python3.11 ] || need+=(python3.11)
# WAL archiving, backups and point-in-time restore of every Citus group
command -v pgbackrest >/dev/null || need+=(pgbackrest)
# the pooler (`pooler:`): PgBouncer behind which HAProxy follows the coordinator's leader
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v haproxy >/dev/null || need+=(haproxy)
command -v curl >/dev/null || need+=(curl ca-certificates gnupg)
# `local.network: netns` (a network namespace per member) and the k8s tests' pod networks
command -v ip >/dev/null || need+=(iproute2)
if [ "$DEV" = 1 ]; then
  # the UI tests and `pipeline screenshots` drive Debian's Chromium (Playwright downloads none)
  [ -x /usr/bin/chromium ] || need+=(chromium)
  # `cluster up --with-metrics`: an exporter per member and a Prometheus scraping them
  command -v prometheus >/dev/null || need+=(prometheus)
  command -v prometheus-postgres-exporter >/dev/null || need+=(prometheus-postgres-exporter)
  # the pooler's exporter (step 1b) imports these from Debian's Python (wheel: pip builds it)
  for pkg in psycopg2:python3-psycopg2 prometheus_client:python3-prometheus-client \
             pythonjsonlogger:python3-pythonjsonlogger yaml:python3-yaml wheel:python3-wheel; do
    [ -d "/usr/lib/python3/dist-packages/${pkg%%:*}" ] || need+=("${pkg#*:}")
  done
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
  # `bench seed`: pgloader is one of the loaders compared; GNU time reads each child's CPU and RSS
  command -v pgloader >/dev/null || need+=(pgloader)
  [ -x /usr/bin/time ] || need+=(time)
  # `k8s build-images`: buildah on a Debian base made by mmdebstrap, skopeo to push
  command -v buildah >/dev/null || need+=(buildah)
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v skopeo >/dev/null || need+=(skopeo)
  # `k8s sandbox`: the CNI plugins (bridge, host-local, portmap, loopback) and iptables of the
  # nodes; runc is built by scripts/k8s-control-plane.sh against libseccomp
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  [ -f /usr/include/seccomp.h ] || need+=(libseccomp-dev pkg-config)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 1b. The pooler's exporter (--dev) --------------------------------------------------------------
# spreaker's prometheus-pgbouncer-exporter from PyPI: Debian's 1.7 fails on its PgBouncer 1.18.
# Its PyPI metadata pins psycopg2 and prometheus_client releases older than Debian's, which work
# with it: no dependencies from PyPI (--no-deps), the venv sees Debian's (--system-site-packages).
# The pin and its hash are the pooler image's (k8s/pooler/exporter-requirements.txt). Root-owned
# and world-readable (umask 022 whatever the caller's): the service user runs it.
EXPORTER_VENV=/opt/citus-pipeline/pgbouncer-exporter
if [ "$DEV" = 1 ] && [ ! -x "$EXPORTER_VENV/bin/pgbouncer-exporter" ]; then
  say "installing prometheus-pgbouncer-exporter from PyPI into $EXPORTER_VENV"
  (
    umask 022
    $SUDO rm -rf "$EXPORTER_VENV"  # what a failed earlier run left
    $SUDO /usr/bin/python3 -m venv --system-site-packages "$EXPORTER_VENV"
    $SUDO "$EXPORTER_VENV/bin/pip" install --quiet --no-cache-dir --no-deps --require-hashes \
      -r k8s/pooler/exporter-requirements.txt
  )
fi
if [ "$DEV" = 1 ] && [ ! -e /usr/local/bin/pgbouncer-exporter ]; then
  $SUDO ln -s "$EXPORTER_VENV/bin/pgbouncer-exporter" /usr/local/bin/pgbouncer-exporter
fi

# 2. uv and the locked environment -----------------------------------------------------------
if ! command -v uv >/dev/null; then
  say "installing uv from PyPI"
  python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages uv
fi
# Patroni runs as the unprivileged 'postgres' user when we are root, so the environment is
# built on the system interpreter (a pyenv or home-directory Python is not reachable by it).
if [ ! -x .venv/bin/python ] || [ "$(readlink -f .venv/bin/python)" != "$(readlink -f /usr/bin/python3.11)" ]; then
  say "creating .venv on /usr/bin/python3.11"
  uv venv --quiet --allow-existing --python /usr/bin/python3.11 .venv
fi
# --inexact: a main-level run never removes the dev tools a --dev run installed.
if [ "$DEV" = 1 ]; then
  say "syncing the locked Python environment with the dev and bench groups"
  uv sync --quiet --frozen --inexact --all-groups
else
  say "syncing the locked Python environment (main dependencies)"
  uv sync --quiet --frozen --inexact
fi

# 3. The citus extension ---------------------------------------------------------------------
PG_CONFIG="${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}"
PKGLIB="$("$PG_CONFIG" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)"
PGVER="$("$PG_CONFIG" --version 2>/dev/null | awk '{print $2}' | cut -d. -f1)"
if [ ! -e "$PKGLIB/citus.so" ]; then
  say "citus.so is missing in $PKGLIB: trying the Citus package repository"
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  keyring=/usr/share/keyrings/citusdata-community.gpg
  if timeout 30 curl -fsSL "https://packagecloud.io/citusdata/community/gpgkey" 2>/dev/null \
      | $SUDO gpg --dearmor --yes -o "$keyring" 2>/dev/null \
     && echo "deb [signed-by=$keyring] https://packagecloud.io/citusdata/community/debian/ $codename main" \
      | $SUDO tee /etc/apt/sources.list.d/citusdata_community.list >/dev/null \
     && timeout 120 $SUDO apt-get update -qq 2>/dev/null \
     && DEBIAN_FRONTEND=noninteractive timeout 300 $SUDO apt-get install -y -qq "postgresql-${PGVER:-15}-citus-13.2" >/dev/null 2>&1; then
    say "installed postgresql-${PGVER:-15}-citus-13.2 from the Citus package repository"
  else
    $SUDO rm -f /etc/apt/sources.list.d/citusdata_community.list
    msg="the citus extension is missing: $PKGLIB/citus.so not found for PostgreSQL ${PGVER:-15}, and the Citus package repository (packagecloud.io/citusdata/community, package postgresql-${PGVER:-15}-citus-13.2) could not be reached. Install Citus 13.2 for PostgreSQL ${PGVER:-15} from there, or point the project at a PostgreSQL that has it: PG_CONFIG=/path/to/pg_config scripts/bootstrap.sh"
    if [ "$CITUS_OPTIONAL" = 1 ]; then
      say "WARNING: $msg"
      say "WARNING: going on without Citus (--citus-optional): the tests that need it will skip"
    else
      echo "bootstrap: $msg" >&2
      exit 1
    fi
  fi
fi
[ -e "$PKGLIB/citus.so" ] && say "citus extension: $PKGLIB/citus.so"

# 4. A real Kubernetes control plane for the `k8s` tests (--dev only) --------------------------
# kube-apiserver/-controller-manager/-scheduler, kubectl and etcd of one pinned release, built
# with Go from the Go module proxy into ~/.cache (minutes the first time, then cached).
if [ "$DEV" = 1 ]; then
  if command -v go >/dev/null; then
    say "Kubernetes control plane for the k8s tests: scripts/k8s-control-plane.sh"
    scripts/k8s-control-plane.sh >/dev/null
  else
    say "WARNING: Go is missing: the k8s tests will skip (install Go >= 1.25, then scripts/k8s-control-plane.sh)"
  fi
  say "ready: scripts/test.sh"
else
  say "ready: uv run citus-pipeline pipeline run"
fi
