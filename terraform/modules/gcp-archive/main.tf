# The archive: a bucket with a retention policy (optionally locked), CMEK, no public access and a lifecycle rule,
# and a second key for jsarchive's own key slots.
#
# Two keys, as on AWS: the *archive key* wraps jsarchive's per-backup data keys (the backup service account may
# only encrypt with it, so it writes backups it can never read); the *bucket key* is the bucket's CMEK, used by the
# Cloud Storage service agent alone (readers and writers of the bucket need no right on it).

data "google_project" "this" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-archive-${var.project_id}")
  prefix      = trim(var.archive_prefix, "/")
  key_prefix  = "${local.prefix}/"
  archive_url = "gs://${local.bucket_name}/${local.prefix}"
  role_prefix = replace(var.name, "-", "_")
  labels      = merge({ app = "jsarchive" }, var.labels)
}

resource "google_kms_key_ring" "this" {
  project  = var.project_id
  name     = "${var.name}-archive"
  location = lower(var.location)
}

resource "google_kms_crypto_key" "archive" {
  name            = "archive"
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period
  labels          = local.labels

  lifecycle {
    prevent_destroy = true # destroying it makes every backup it wraps unreadable (unless an age slot opens it)
  }
}

resource "google_kms_crypto_key" "bucket" {
  name            = "bucket"
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period
  labels          = local.labels

  lifecycle {
    prevent_destroy = true # destroying it makes every object in the bucket unreadable
  }
}

resource "google_kms_crypto_key_iam_member" "gcs_uses_bucket_key" {
  crypto_key_id = google_kms_crypto_key.bucket.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_bucket" "archive" {
  #checkov:skip=CKV_GCP_78:Object Versioning cannot be enabled on a bucket with a retention policy; the retention policy (Bucket Lock) is what protects the objects here
  project                     = var.project_id
  name                        = local.bucket_name
  location                    = upper(var.location)
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  retention_policy {
    retention_period = var.retention_days * 86400
    is_locked        = var.lock_retention
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.bucket.id
  }

  # Only data objects go cold: manifests, refs and sets are read by ls, verify, prune and every restore's preflight.
  lifecycle_rule {
    condition {
      age            = var.archive_after_days
      matches_prefix = ["${local.key_prefix}data/"]
    }
    action {
      type          = "SetStorageClass"
      storage_class = "ARCHIVE"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "logging" {
    for_each = var.access_log_bucket == null ? [] : [var.access_log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = local.bucket_name
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.gcs_uses_bucket_key]
}
