# The scheduled backup: the jsarchive image as a Cloud Run job, sharded by task index, started by Cloud Scheduler.
#
# Every task runs `jsarchive account backup` with the same archive. jsarchive reads CLOUD_RUN_TASK_INDEX and
# CLOUD_RUN_TASK_COUNT as its shard and CLOUD_RUN_EXECUTION as the run id, backs up the streams whose name hashes
# to its shard, and the last task to finish writes the set. A retried task keeps its index and execution, so it
# resumes its shard. Each task logs one JSON line per stream and a summary (--log-json) for Cloud Logging.

locals {
  backup_args = concat(
    ["account", "backup", local.archive_url, "--gcp-kms-key", google_kms_crypto_key.archive.id],
    flatten([for r in var.age_recipients : ["--recipient", r]]),
    flatten([for g in var.include : ["--include", g]]),
    flatten([for g in var.exclude : ["--exclude", g]]),
    ["--parallel", tostring(var.parallel), "--log-json", "--no-progress"],
    var.metrics_push_url == null ? [] : ["--metrics-push", var.metrics_push_url],
  )
}

resource "google_cloud_run_v2_job" "backup" {
  project  = var.project_id
  name     = "${var.name}-backup"
  location = var.region
  labels   = local.labels

  template {
    task_count  = var.task_count
    parallelism = var.parallelism

    template {
      service_account = google_service_account.backup.email
      timeout         = "${var.task_timeout_seconds}s"
      max_retries     = var.max_retries

      containers {
        image = var.image
        args  = local.backup_args

        env {
          name  = "NATS_URL"
          value = var.nats_url
        }
        env {
          name  = "NATS_CREDS"
          value = "/secrets/nats/backup.creds"
        }

        resources {
          limits = {
            cpu    = var.cpu
            memory = var.memory
          }
        }

        volume_mounts {
          name       = "nats-credentials"
          mount_path = "/secrets/nats"
        }
      }

      # Secret Manager mounted as a file: in memory, readable by the container only.
      volumes {
        name = "nats-credentials"
        secret {
          secret = var.nats_secret_id
          items {
            version = "latest"
            path    = "backup.creds"
            mode    = 256 # 0400
          }
        }
      }

      dynamic "vpc_access" {
        for_each = var.vpc_network == null ? [] : [1]
        content {
          egress = "PRIVATE_RANGES_ONLY"
          network_interfaces {
            network    = var.vpc_network
            subnetwork = var.vpc_subnetwork
          }
        }
      }
    }
  }

  depends_on = [
    google_storage_bucket_iam_member.backup_writes,
    google_kms_crypto_key_iam_member.backup_wraps,
    google_secret_manager_secret_iam_member.backup_reads_nats_secret,
  ]
}

resource "google_cloud_scheduler_job" "backup" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-account-backup"
  description      = "jsarchive account backup into ${local.archive_url}"
  schedule         = var.schedule
  time_zone        = var.time_zone
  attempt_deadline = "320s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.backup.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_backup]
}
