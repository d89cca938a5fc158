# ---- backups ------------------------------------------------------------------------------
# pgBackRest's repository: every Citus group's WAL archive and backups, one stanza per group
# under the prefix /<scope> (cluster.yaml: backup.s3_bucket; path-style, ru-central1). The
# member pods reach it with the static access key of an account of its own, which goes into
# the Kubernetes Secret backup.s3_secret (README.md: "Backups").
resource "yandex_iam_service_account" "backup" {
  name        = "${var.name}-backup"
  description = "pgBackRest in the Citus pods: WAL archive and backups in ${var.backup_bucket}"
}

# storage.editor on the folder: a binding on the bucket alone (yandex_storage_bucket_iam_binding)
# needs provider 0.145. Keep other buckets out of this folder, or narrow it after an upgrade.
resource "yandex_resourcemanager_folder_iam_member" "backup_storage" {
  folder_id = var.folder_id
  role      = "storage.editor"
  member    = "serviceAccount:${yandex_iam_service_account.backup.id}"
}

resource "yandex_iam_service_account_static_access_key" "backup" {
  service_account_id = yandex_iam_service_account.backup.id
  description        = "pgBackRest's S3 key (Kubernetes Secret backup.s3_secret)"
}

# The backups hold the whole database: encrypted at rest with a key only the backup account
# (and the folder's administrators) may use.
resource "yandex_kms_symmetric_key" "backup" {
  name              = "${var.name}-backup"
  default_algorithm = "AES_256"
  rotation_period   = "8760h"
  labels            = var.labels
}

resource "yandex_kms_symmetric_key_iam_binding" "backup" {
  symmetric_key_id = yandex_kms_symmetric_key.backup.id
  role             = "kms.keys.encrypterDecrypter"
  members          = ["serviceAccount:${yandex_iam_service_account.backup.id}"]
}

# No versioning and no lifecycle rules: pgBackRest expires old backups and their WAL itself
# (backup.retention_full), and a versioned bucket would keep what it deletes. Terraform
# does not delete the bucket while it holds objects (force_destroy stays false).
resource "yandex_storage_bucket" "backup" {
  bucket    = var.backup_bucket
  folder_id = var.folder_id

  anonymous_access_flags {
    read        = false
    list        = false
    config_read = false
  }

  server_side_encryption_configuration {
    rule {
      apply_server_side_encryption_by_default {
        kms_master_key_id = yandex_kms_symmetric_key.backup.id
        sse_algorithm     = "aws:kms"
      }
    }
  }
}
