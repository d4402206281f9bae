# A production archive on Google Cloud: a nightly account backup as a Cloud Run job of 4 tasks (4 shards).
#
#   gcloud secrets create nats-backup --data-file=backup.creds
#   terraform init && terraform apply -var project_id=… -var image=europe-west1-docker.pkg.dev/…/jsarchive:… \
#       -var nats_url=nats://10.0.0.10:4222

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

variable "break_glass_recipient" {
  type    = string
  default = null
}

provider "google" {
  project = var.project_id
  region  = "europe-west1"
}

module "archive" {
  source = "../../modules/gcp-archive"

  project_id     = var.project_id
  name           = "jsarchive"
  location       = "europe-west1"
  region         = "europe-west1"
  archive_prefix = "prod"

  retention_days     = 35
  lock_retention     = false # set true once the retention period is final: locking cannot be undone
  archive_after_days = 30

  image          = var.image
  nats_url       = var.nats_url
  nats_secret_id = "nats-backup"
  age_recipients = var.break_glass_recipient == null ? [] : [var.break_glass_recipient]
  task_count     = 4
  exclude        = ["TMP_*"]
  schedule       = "0 2 * * *"
}

output "archive_url" {
  value = module.archive.archive_url
}

output "archive_key_id" {
  value = module.archive.archive_key_id
}
