# The archive in one region and a weekly DR drill in another: a Cloud Run job there, running as the module's
# restore service account, opens the newest backup of every stream (`jsarchive verify --latest --deep`: decrypted
# with the archive key, decompressed, parsed to the end). Use a multi-region location (eu, us) for the bucket and
# key ring so both stay readable when one region is down.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.20, < 7.0"
    }
  }
}

variable "project_id" {
  type = string
}

variable "image" {
  type = string
}

variable "nats_url" {
  type = string
}

variable "primary_region" {
  type    = string
  default = "europe-west1"
}

variable "dr_region" {
  type    = string
  default = "europe-north1"
}

provider "google" {
  project = var.project_id
}

module "archive" {
  source = "../../modules/gcp-archive"

  project_id     = var.project_id
  location       = "eu" # multi-region bucket and key ring
  region         = var.primary_region
  image          = var.image
  nats_url       = var.nats_url
  nats_secret_id = "nats-backup"
}

check "drill_in_another_region" {
  assert {
    condition     = var.dr_region != var.primary_region
    error_message = "the DR drill must run in another region than the backups"
  }
}

resource "google_cloud_run_v2_job" "drill" {
  project  = var.project_id
  name     = "jsarchive-dr-drill"
  location = var.dr_region

  template {
    task_count = 1

    template {
      service_account = module.archive.restore_service_account
      timeout         = "21600s"
      max_retries     = 1

      containers {
        image = var.image
        args  = ["verify", module.archive.archive_url, "--latest", "--deep", "--gcp-kms-key", module.archive.archive_key_id]

        resources {
          limits = {
            cpu    = "2"
            memory = "2Gi"
          }
        }
      }
    }
  }
}

resource "google_service_account" "drill_scheduler" {
  project      = var.project_id
  account_id   = "jsarchive-drill-scheduler"
  display_name = "jsarchive: runs the DR drill"
}

resource "google_cloud_run_v2_job_iam_member" "drill_scheduler" {
  project  = var.project_id
  location = var.dr_region
  name     = google_cloud_run_v2_job.drill.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.drill_scheduler.email}"
}

resource "google_cloud_scheduler_job" "drill" {
  project   = var.project_id
  region    = var.dr_region
  name      = "jsarchive-dr-drill"
  schedule  = "0 6 * * 1"
  time_zone = "Etc/UTC"

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.dr_region}/jobs/${google_cloud_run_v2_job.drill.name}:run"

    oauth_token {
      service_account_email = google_service_account.drill_scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.drill_scheduler]
}

output "archive_url" {
  value = module.archive.archive_url
}
