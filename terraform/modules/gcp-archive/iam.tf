# Least-privilege service accounts. Bucket rights are granted on the bucket only, key rights on one key only.
#
# | account   | bucket                                      | archive key            | NATS secret     |
# |-----------|---------------------------------------------|------------------------|-----------------|
# | backup    | create, get, list: never delete or replace  | cryptoKeyEncrypter     | secretAccessor  |
# | restore   | objectViewer (get, list)                    | cryptoKeyDecrypter     | -               |
# | prune     | get, list, delete                           | -                      | -               |
# | scheduler | -                                           | -                      | - (run.invoker on the job) |
#
# The retention policy applies to every account: prune cannot delete an object younger than retention_days.

resource "google_service_account" "backup" {
  project      = var.project_id
  account_id   = "${var.name}-backup"
  display_name = "jsarchive backup writer (${local.archive_url})"
}

resource "google_service_account" "restore" {
  project      = var.project_id
  account_id   = "${var.name}-restore"
  display_name = "jsarchive restorer (${local.archive_url})"
}

resource "google_service_account" "prune" {
  project      = var.project_id
  account_id   = "${var.name}-prune"
  display_name = "jsarchive pruner (${local.archive_url})"
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name}-scheduler"
  display_name = "jsarchive scheduler: runs the backup job"
}

resource "google_project_iam_custom_role" "writer" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_archive_writer"
  title       = "jsarchive archive writer"
  description = "Create and read archive objects; no delete (so no overwrite), no IAM, no bucket changes."
  permissions = [
    "storage.objects.create",
    "storage.objects.get",
    "storage.objects.list",
  ]
}

resource "google_project_iam_custom_role" "pruner" {
  project     = var.project_id
  role_id     = "${local.role_prefix}_archive_pruner"
  title       = "jsarchive archive pruner"
  description = "Read, list and delete archive objects (the bucket's retention policy still applies)."
  permissions = [
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
  ]
}

resource "google_storage_bucket_iam_member" "backup_writes" {
  bucket = google_storage_bucket.archive.name
  role   = google_project_iam_custom_role.writer.id
  member = "serviceAccount:${google_service_account.backup.email}"
}

resource "google_storage_bucket_iam_member" "restore_reads" {
  bucket = google_storage_bucket.archive.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.restore.email}"
}

resource "google_storage_bucket_iam_member" "prune_deletes" {
  bucket = google_storage_bucket.archive.name
  role   = google_project_iam_custom_role.pruner.id
  member = "serviceAccount:${google_service_account.prune.email}"
}

resource "google_kms_crypto_key_iam_member" "backup_wraps" {
  crypto_key_id = google_kms_crypto_key.archive.id
  role          = "roles/cloudkms.cryptoKeyEncrypter"
  member        = "serviceAccount:${google_service_account.backup.email}"
}

resource "google_kms_crypto_key_iam_member" "restore_unwraps" {
  crypto_key_id = google_kms_crypto_key.archive.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = "serviceAccount:${google_service_account.restore.email}"
}

resource "google_secret_manager_secret_iam_member" "backup_reads_nats_secret" {
  project   = var.project_id
  secret_id = var.nats_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.backup.email}"
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_backup" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.backup.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}
