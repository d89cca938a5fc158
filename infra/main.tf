locals {
  subnets = { for i, zone in var.zones : zone => var.subnet_cidrs[i] }
  # A zonal master lives in the first zone only.
  master_zones = var.regional_master ? var.zones : [var.zones[0]]
}

# ---- network ------------------------------------------------------------------------------
resource "yandex_vpc_network" "main" {
  name   = "${var.name}-network"
  labels = var.labels
}

# Nodes have no public addresses; they reach registries through a NAT gateway.
resource "yandex_vpc_gateway" "nat" {
  name = "${var.name}-nat"
  shared_egress_gateway {}
}

resource "yandex_vpc_route_table" "nat" {
  name       = "${var.name}-nat"
  network_id = yandex_vpc_network.main.id

  static_route {
    destination_prefix = "0.0.0.0/0"
    gateway_id         = yandex_vpc_gateway.nat.id
  }
}

resource "yandex_vpc_subnet" "zone" {
  for_each = local.subnets

  name           = "${var.name}-${each.key}"
  zone           = each.key
  network_id     = yandex_vpc_network.main.id
  v4_cidr_blocks = [each.value]
  route_table_id = yandex_vpc_route_table.nat.id
  labels         = var.labels
}

# ---- service accounts ---------------------------------------------------------------------
# The cluster's own account manages cloud resources for Kubernetes (nodes' network, load
# balancers, public addresses); the nodes' account only pulls images.
resource "yandex_iam_service_account" "cluster" {
  name        = "${var.name}-k8s-cluster"
  description = "Managed Kubernetes cluster ${var.name}: cluster resources and load balancers"
}

resource "yandex_iam_service_account" "nodes" {
  name        = "${var.name}-k8s-nodes"
  description = "Managed Kubernetes cluster ${var.name}: nodes pull images from Container Registry"
}

resource "yandex_resourcemanager_folder_iam_member" "cluster" {
  for_each = toset([
    "k8s.clusters.agent",
    "vpc.publicAdmin",
    "load-balancer.admin",
  ])

  folder_id = var.folder_id
  role      = each.value
  member    = "serviceAccount:${yandex_iam_service_account.cluster.id}"
}

resource "yandex_resourcemanager_folder_iam_member" "nodes_puller" {
  folder_id = var.folder_id
  role      = "container-registry.images.puller"
  member    = "serviceAccount:${yandex_iam_service_account.nodes.id}"
}

# Kubernetes Secrets (database passwords, TLS keys) are encrypted at rest with this key.
resource "yandex_kms_symmetric_key" "secrets" {
  name              = "${var.name}-k8s-secrets"
  default_algorithm = "AES_256"
  rotation_period   = "8760h"
  labels            = var.labels
}

resource "yandex_kms_symmetric_key_iam_binding" "secrets" {
  symmetric_key_id = yandex_kms_symmetric_key.secrets.id
  role             = "kms.keys.encrypterDecrypter"
  members          = ["serviceAccount:${yandex_iam_service_account.cluster.id}"]
}

# ---- security groups ----------------------------------------------------------------------
# Nodes: traffic among themselves and the master, pods and services, the load balancers'
# health checks, and PostgreSQL clients on the node ports behind the load balancers. Nothing
# else comes in (no SSH).
resource "yandex_vpc_security_group" "nodes" {
  name       = "${var.name}-k8s-nodes"
  network_id = yandex_vpc_network.main.id
  labels     = var.labels

  ingress {
    description       = "nodes and master to each other"
    protocol          = "ANY"
    predefined_target = "self_security_group"
    from_port         = 0
    to_port           = 65535
  }

  ingress {
    description    = "pod and service networks"
    protocol       = "ANY"
    v4_cidr_blocks = [var.cluster_ipv4_range, var.service_ipv4_range]
    from_port      = 0
    to_port        = 65535
  }

  ingress {
    description       = "Network Load Balancer health checks"
    protocol          = "TCP"
    predefined_target = "loadbalancer_healthchecks"
    from_port         = 0
    to_port           = 65535
  }

  ingress {
    description    = "PostgreSQL clients through the coordinator/workers load balancers (node ports)"
    protocol       = "TCP"
    v4_cidr_blocks = var.client_cidrs
    from_port      = 30000
    to_port        = 32767
  }

  ingress {
    description    = "path MTU discovery and diagnostics inside the VPC"
    protocol       = "ICMP"
    v4_cidr_blocks = var.subnet_cidrs
  }

  egress {
    description    = "registries, the Kubernetes API, cloud APIs"
    protocol       = "ANY"
    v4_cidr_blocks = ["0.0.0.0/0"]
    from_port      = 0
    to_port        = 65535
  }
}

# Master: the Kubernetes API for the listed operator ranges only.
resource "yandex_vpc_security_group" "master" {
  name       = "${var.name}-k8s-master"
  network_id = yandex_vpc_network.main.id
  labels     = var.labels

  ingress {
    description    = "Kubernetes API (kubectl, citus-pipeline k8s)"
    protocol       = "TCP"
    v4_cidr_blocks = var.api_allowed_cidrs
    port           = 443
  }

  ingress {
    description    = "Kubernetes API (kubectl, citus-pipeline k8s)"
    protocol       = "TCP"
    v4_cidr_blocks = var.api_allowed_cidrs
    port           = 6443
  }

  egress {
    description    = "master to the nodes (kubelet, webhooks)"
    protocol       = "ANY"
    v4_cidr_blocks = var.subnet_cidrs
    from_port      = 0
    to_port        = 65535
  }
}

# ---- Kubernetes ---------------------------------------------------------------------------
resource "yandex_kubernetes_cluster" "main" {
  name                    = var.name
  network_id              = yandex_vpc_network.main.id
  service_account_id      = yandex_iam_service_account.cluster.id
  node_service_account_id = yandex_iam_service_account.nodes.id
  cluster_ipv4_range      = var.cluster_ipv4_range
  service_ipv4_range      = var.service_ipv4_range
  release_channel         = var.release_channel
  # NetworkPolicies in k8s/base are enforced only with a policy provider.
  network_policy_provider = "CALICO"
  labels                  = var.labels

  master {
    version            = var.kubernetes_version
    public_ip          = var.master_public_ip
    security_group_ids = [yandex_vpc_security_group.master.id, yandex_vpc_security_group.nodes.id]

    dynamic "zonal" {
      for_each = var.regional_master ? [] : [var.zones[0]]
      content {
        zone      = zonal.value
        subnet_id = yandex_vpc_subnet.zone[zonal.value].id
      }
    }

    dynamic "regional" {
      for_each = var.regional_master ? [1] : []
      content {
        region = "ru-central1"

        dynamic "location" {
          for_each = local.master_zones
          content {
            zone      = location.value
            subnet_id = yandex_vpc_subnet.zone[location.value].id
          }
        }
      }
    }

    maintenance_policy {
      auto_upgrade = true

      maintenance_window {
        start_time = "02:00"
        duration   = "3h"
      }
    }
  }

  kms_provider {
    key_id = yandex_kms_symmetric_key.secrets.id
  }

  depends_on = [
    yandex_resourcemanager_folder_iam_member.cluster,
    yandex_resourcemanager_folder_iam_member.nodes_puller,
    yandex_kms_symmetric_key_iam_binding.secrets,
  ]
}

resource "yandex_kubernetes_node_group" "main" {
  cluster_id = yandex_kubernetes_cluster.main.id
  name       = "${var.name}-nodes"
  version    = var.kubernetes_version
  labels     = var.labels

  instance_template {
    platform_id = var.node_platform_id

    resources {
      cores         = var.node_cores
      memory        = var.node_memory_gb
      core_fraction = var.node_core_fraction
    }

    boot_disk {
      type = var.node_disk_type
      size = var.node_disk_size_gb
    }

    network_interface {
      nat                = false
      subnet_ids         = [for z in var.zones : yandex_vpc_subnet.zone[z].id]
      security_group_ids = [yandex_vpc_security_group.nodes.id]
    }

    scheduling_policy {
      preemptible = false
    }

    container_runtime {
      type = "containerd"
    }
  }

  scale_policy {
    fixed_scale {
      size = var.node_count
    }
  }

  # One location per zone: the group's nodes are spread over the three zones.
  allocation_policy {
    dynamic "location" {
      for_each = var.zones
      content {
        zone = location.value
      }
    }
  }

  maintenance_policy {
    auto_upgrade = true
    auto_repair  = true

    maintenance_window {
      start_time = "03:00"
      duration   = "3h"
    }
  }
}
