variable "folder_id" {
  description = "Yandex Cloud folder that holds every resource created here (yc resource-manager folder list)."
  type        = string
}

variable "name" {
  description = "Name prefix of the network, service accounts, security groups, cluster and node group."
  type        = string
  default     = "citus"

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{1,30}$", var.name))
    error_message = "name must be 2-31 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "zones" {
  description = "Availability zones, one subnet each; node group members are spread over them. The first one holds a zonal master."
  type        = list(string)
  default     = ["ru-central1-a", "ru-central1-b", "ru-central1-d"]

  validation {
    condition     = length(var.zones) == 3
    error_message = "zones must list exactly three zones (a regional master needs three)."
  }
}

variable "subnet_cidrs" {
  description = "IPv4 CIDR of the subnet in each zone (same order as zones). Keep in sync with kubernetes.client_cidrs in cluster.yaml."
  type        = list(string)
  default     = ["10.128.0.0/24", "10.129.0.0/24", "10.130.0.0/24"]

  validation {
    condition     = length(var.subnet_cidrs) == 3 && alltrue([for c in var.subnet_cidrs : can(cidrhost(c, 0))])
    error_message = "subnet_cidrs must be three IPv4 CIDR blocks."
  }
}

variable "cluster_ipv4_range" {
  description = "Pod CIDR of the Kubernetes cluster; must not overlap the subnets."
  type        = string
  default     = "10.112.0.0/16"
}

variable "service_ipv4_range" {
  description = "Service (ClusterIP) CIDR of the Kubernetes cluster; must not overlap the subnets or the pod CIDR."
  type        = string
  default     = "10.96.0.0/16"
}

variable "regional_master" {
  description = "true: highly-available master in all three zones (regional); false: a zonal master in zones[0] (cheaper, for test environments)."
  type        = bool
  default     = true
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the master and the nodes (the manifests are validated against kubernetes.api_version in cluster.yaml)."
  type        = string
  default     = "1.30"
}

variable "release_channel" {
  description = "Managed Kubernetes release channel: RAPID, REGULAR or STABLE."
  type        = string
  default     = "STABLE"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "master_public_ip" {
  description = "Give the Kubernetes API a public address (reachable only from api_allowed_cidrs)."
  type        = bool
  default     = true
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API on 443/6443 (operators, CI). No default on purpose: set it to your own ranges."
  type        = list(string)
}

variable "client_cidrs" {
  description = "CIDRs allowed to reach the coordinator/workers load balancers' node ports (PostgreSQL clients). Keep in sync with kubernetes.client_cidrs in cluster.yaml."
  type        = list(string)
  default     = ["10.128.0.0/24", "10.129.0.0/24", "10.130.0.0/24"]
}

variable "node_count" {
  description = "Nodes in the node group (fixed scale); spread over the zones. The coordinator's members need three nodes (hostname anti-affinity)."
  type        = number
  default     = 3

  validation {
    condition     = var.node_count >= 3
    error_message = "node_count must be at least 3: the coordinator group has three members on distinct nodes."
  }
}

variable "node_cores" {
  description = "vCPUs per node."
  type        = number
  default     = 4
}

variable "node_memory_gb" {
  description = "Memory per node, in GB."
  type        = number
  default     = 16
}

variable "node_core_fraction" {
  description = "Guaranteed share of each vCPU, in percent (100: no burstable cores for a database)."
  type        = number
  default     = 100
}

variable "node_platform_id" {
  description = "Compute platform of the nodes (standard-v3: Intel Ice Lake)."
  type        = string
  default     = "standard-v3"
}

variable "node_disk_type" {
  description = "Boot disk type of the nodes (PostgreSQL data lives on separate PVC disks)."
  type        = string
  default     = "network-ssd"
}

variable "node_disk_size_gb" {
  description = "Boot disk size of each node, in GB (images, logs, emptyDir)."
  type        = number
  default     = 64
}

variable "labels" {
  description = "Labels put on every resource that supports them."
  type        = map(string)
  default     = { project = "citus-pipeline" }
}

variable "backup_bucket" {
  description = "Object Storage bucket of pgBackRest's repository (WAL archive and backups). Bucket names are global: pick your own and set the same as backup.s3_bucket in cluster.yaml."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]$", var.backup_bucket))
    error_message = "backup_bucket must be 3-63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit."
  }
}
