variable "project_id" {
  description = "Project of every resource."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (bucket, keys, service accounts, job, scheduler)."
  type        = string
  default     = "jsarchive"

  validation {
    # service account ids are 6-30 characters: the longest is "<name>-scheduler"
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.name))
    error_message = "name: 2-20 characters of lower-case letters, digits and '-', starting with a letter and not ending with '-'."
  }
}

variable "location" {
  description = "Location of the bucket and of its key ring: a region (europe-west1) or a multi-region (eu, us). CMEK needs the key ring in the bucket's location."
  type        = string
  default     = "europe-west1"
}

variable "region" {
  description = "Region of the Cloud Run job and the Cloud Scheduler trigger."
  type        = string
  default     = "europe-west1"
}

variable "bucket_name" {
  description = "Name of the archive bucket. Default: <name>-archive-<project id>."
  type        = string
  default     = null
}

variable "archive_prefix" {
  description = "Prefix of the archive inside the bucket: the archive URL is gs://<bucket>/<archive_prefix>."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.archive_prefix))
    error_message = "archive_prefix: path segments of letters, digits, '.', '_' and '-', separated by '/'."
  }
}

# -- retention and lifecycle -----------------------------------------------------------------------------------------

variable "retention_days" {
  description = "Bucket retention policy: no object can be deleted or replaced before it is this many days old."
  type        = number
  default     = 35

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 36500
    error_message = "retention_days must be between 1 and 36500."
  }
}

variable "lock_retention" {
  description = "Lock the retention policy (Bucket Lock). IRREVERSIBLE: the policy can never be shortened or removed, and the bucket cannot be deleted while it holds objects."
  type        = bool
  default     = false
}

variable "archive_after_days" {
  description = "Days after which data objects (data/) move to the ARCHIVE storage class. Manifests, refs and sets stay STANDARD."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Bucket that receives the archive bucket's usage logs (null: no usage logs; Cloud Audit Logs still apply)."
  type        = string
  default     = null
}

variable "kms_rotation_period" {
  description = "Rotation period of both keys, in seconds with an 's' suffix (at most 90 days: 7776000s)."
  type        = string
  default     = "7776000s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.kms_rotation_period)) && tonumber(trimsuffix(var.kms_rotation_period, "s")) <= 7776000 && tonumber(trimsuffix(var.kms_rotation_period, "s")) >= 86400
    error_message = "kms_rotation_period must be between 86400s (1 day) and 7776000s (90 days)."
  }
}

variable "age_recipients" {
  description = "age recipients (age1…) that get a key slot in every backup besides the Cloud KMS key (an offline break-glass identity)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.age_recipients : can(regex("^age1[0-9a-z]{58}$", r))])
    error_message = "age_recipients must be age X25519 recipients (age1…)."
  }
}

# -- NATS and the job ------------------------------------------------------------------------------------------------

variable "nats_url" {
  description = "NATS server URL(s), comma separated."
  type        = string
}

variable "nats_secret_id" {
  description = "Secret Manager secret (its id or projects/…/secrets/… name) holding the NATS credentials as a natscli .creds file; mounted into the job as a file (in memory)."
  type        = string
}

variable "image" {
  description = "The jsarchive container image (the repository's Dockerfile) in Artifact Registry."
  type        = string
}

variable "task_count" {
  description = "Tasks of each job execution: the account is split into this many shards by stream-name hash (CLOUD_RUN_TASK_INDEX); the last task to finish seals the set."
  type        = number
  default     = 1

  validation {
    condition     = var.task_count >= 1 && var.task_count <= 10000
    error_message = "task_count must be between 1 and 10000."
  }
}

variable "parallelism" {
  description = "Tasks running at once (0: as many as task_count)."
  type        = number
  default     = 0
}

variable "task_timeout_seconds" {
  description = "Timeout of one task (up to 168 hours)."
  type        = number
  default     = 21600
}

variable "max_retries" {
  description = "Retries of a failed task. A retried task keeps its index and the execution id, so it resumes its shard."
  type        = number
  default     = 2
}

variable "cpu" {
  type    = string
  default = "2"
}

variable "memory" {
  type    = string
  default = "2Gi"
}

variable "parallel" {
  description = "Streams backed up at once by each task."
  type        = number
  default     = 2
}

variable "include" {
  type    = list(string)
  default = []
}

variable "exclude" {
  type    = list(string)
  default = []
}

variable "metrics_push_url" {
  description = "Prometheus Pushgateway URL the tasks push their metrics to (null: none; the JSON log lines remain)."
  type        = string
  default     = null
}

variable "vpc_network" {
  description = "VPC network for direct VPC egress when NATS is reachable only inside a VPC (null: no VPC access)."
  type        = string
  default     = null
}

variable "vpc_subnetwork" {
  type    = string
  default = null
}

variable "schedule" {
  description = "Cloud Scheduler cron expression of the account backup."
  type        = string
  default     = "0 2 * * *"
}

variable "time_zone" {
  type    = string
  default = "Etc/UTC"
}

variable "labels" {
  type    = map(string)
  default = {}
}
