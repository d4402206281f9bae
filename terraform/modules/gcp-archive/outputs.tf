output "archive_url" {
  description = "The archive URL for jsarchive (gs://bucket/prefix)."
  value       = local.archive_url
}

output "bucket_name" {
  value = google_storage_bucket.archive.name
}

output "archive_key_id" {
  description = "Cloud KMS key for jsarchive's key slots: --gcp-kms-key / $JSARCHIVE_GCP_KMS_KEY."
  value       = google_kms_crypto_key.archive.id
}

output "bucket_key_id" {
  value = google_kms_crypto_key.bucket.id
}

output "backup_service_account" {
  value = google_service_account.backup.email
}

output "restore_service_account" {
  value = google_service_account.restore.email
}

output "prune_service_account" {
  value = google_service_account.prune.email
}

output "job_name" {
  value = google_cloud_run_v2_job.backup.name
}

output "scheduler_job" {
  value = google_cloud_scheduler_job.backup.id
}
