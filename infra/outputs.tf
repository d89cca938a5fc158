output "cluster_id" {
  description = "Managed Kubernetes cluster id."
  value       = yandex_kubernetes_cluster.main.id
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint (public when master_public_ip, else internal)."
  value = (var.master_public_ip
    ? yandex_kubernetes_cluster.main.master[0].external_v4_endpoint
  : yandex_kubernetes_cluster.main.master[0].internal_v4_endpoint)
}

output "get_credentials_command" {
  description = "Writes a kubeconfig context for this cluster (needs the yc CLI)."
  value = format(
    "yc managed-kubernetes cluster get-credentials --id %s --%s --folder-id %s",
    yandex_kubernetes_cluster.main.id,
    var.master_public_ip ? "external" : "internal",
    var.folder_id,
  )
}

output "network_id" {
  description = "VPC network id."
  value       = yandex_vpc_network.main.id
}

output "subnet_ids" {
  description = "Subnet id per zone."
  value       = { for z, s in yandex_vpc_subnet.zone : z => s.id }
}

output "lb_subnet_id" {
  description = "Subnet for the internal load balancers (yandex.cloud/subnet-id in k8s/overlays/yandex-cloud)."
  value       = yandex_vpc_subnet.zone[var.zones[0]].id
}

output "backup_bucket" {
  description = "Object Storage bucket of pgBackRest's repository (backup.s3_bucket in cluster.yaml)."
  value       = yandex_storage_bucket.backup.bucket
}

output "backup_access_key_id" {
  description = "Static access key id of the backup service account: key access-key of the Kubernetes Secret backup.s3_secret."
  value       = yandex_iam_service_account_static_access_key.backup.access_key
}

output "backup_secret_key" {
  description = "Its secret key: key secret-key of the Kubernetes Secret backup.s3_secret. Terraform's state holds it too."
  value       = yandex_iam_service_account_static_access_key.backup.secret_key
  sensitive   = true
}
