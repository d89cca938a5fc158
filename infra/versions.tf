terraform {
  required_version = "~> 1.11"

  required_providers {
    yandex = {
      source  = "yandex-cloud/yandex"
      version = "~> 0.142.0"
    }
  }
}

# Credentials never live in these files: the provider reads YC_TOKEN (or
# YC_SERVICE_ACCOUNT_KEY_FILE) and YC_CLOUD_ID from the environment.
provider "yandex" {
  folder_id = var.folder_id
  zone      = var.zones[0]
}
