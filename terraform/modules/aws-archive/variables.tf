variable "name" {
  description = "Prefix of every resource name (bucket, keys, roles, function, schedule, alarm)."
  type        = string
  default     = "jsarchive"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name: 2-31 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "bucket_name" {
  description = "Name of the archive bucket. Default: <name>-archive-<account id>-<region>."
  type        = string
  default     = null
}

variable "archive_prefix" {
  description = "Prefix of the archive inside the bucket: the archive URL is s3://<bucket>/<archive_prefix>."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.archive_prefix))
    error_message = "archive_prefix: path segments of letters, digits, '.', '_' and '-', separated by '/', without leading or trailing '/'."
  }
}

# -- Object Lock and lifecycle -----------------------------------------------------------------------------------

variable "object_lock_mode" {
  description = "Default Object Lock mode of every new object: GOVERNANCE (removable with s3:BypassGovernanceRetention, which no role here has) or COMPLIANCE (nobody, not even root, can shorten it)."
  type        = string
  default     = "GOVERNANCE"

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "object_lock_days" {
  description = "Default retention in days of every new object (data, manifests, refs, sets, run records)."
  type        = number
  default     = 35

  validation {
    condition     = var.object_lock_days >= 1 && var.object_lock_days <= 36500
    error_message = "object_lock_days must be between 1 and 36500."
  }
}

variable "data_transition_days" {
  description = "Days after which data objects (data/) move to data_storage_class. Manifests, refs and sets stay STANDARD."
  type        = number
  default     = 30

  validation {
    condition     = var.data_transition_days >= 0
    error_message = "data_transition_days must not be negative."
  }
}

variable "data_storage_class" {
  description = "Cold storage class for data objects: GLACIER_IR (readable at once), GLACIER or DEEP_ARCHIVE (restores need `jsarchive thaw` first)."
  type        = string
  default     = "GLACIER"

  validation {
    condition     = contains(["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"], var.data_storage_class)
    error_message = "data_storage_class must be GLACIER_IR, GLACIER or DEEP_ARCHIVE."
  }
}

# -- keys ----------------------------------------------------------------------------------------------------------

variable "kms_deletion_window_days" {
  description = "Waiting period before a KMS key scheduled for deletion is deleted."
  type        = number
  default     = 30
}

variable "kms_multi_region" {
  description = "Make the archive key (jsarchive's key slots) a multi-Region key, so a replica in a DR region can open backups when this region is down (see examples/aws-dr-drill)."
  type        = bool
  default     = false
}

variable "age_recipients" {
  description = "age recipients (age1…) that get a key slot in every backup besides the KMS key: an offline break-glass identity, kept outside AWS."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.age_recipients : can(regex("^age1[0-9a-z]{58}$", r))])
    error_message = "age_recipients must be age X25519 recipients (age1…)."
  }
}

# -- NATS ------------------------------------------------------------------------------------------------------------

variable "nats_url" {
  description = "NATS server URL(s), comma separated, that the backup function connects to."
  type        = string
}

variable "nats_secret_arn" {
  description = "Secrets Manager secret holding the NATS credentials (a natscli .creds file, an nkey seed, or JSON with user/password/token). Default: the module creates an empty secret; put the value in yourself."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets for the functions when NATS is reachable only inside a VPC (the subnets need a route to S3, KMS and Secrets Manager: VPC endpoints or NAT)."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups for the functions in the VPC (egress to NATS and the AWS endpoints)."
  type        = list(string)
  default     = []
}

# -- the scheduled backup -------------------------------------------------------------------------------------------

variable "create_function" {
  description = "Create the backup Lambda function and its schedule (false: bucket, keys and roles only)."
  type        = bool
  default     = true
}

variable "image_uri" {
  description = "ECR image URI of the jsarchive container image (the repository's Dockerfile), in this account and region."
  type        = string
  default     = null
}

variable "schedule_expression" {
  description = "EventBridge Scheduler expression of the account backup, e.g. cron(0 2 * * ? *) or rate(6 hours)."
  type        = string
  default     = "cron(0 2 * * ? *)"
}

variable "schedule_timezone" {
  description = "Time zone of schedule_expression."
  type        = string
  default     = "UTC"
}

variable "include" {
  description = "Back up only streams matching these globs (default: every stream of the account)."
  type        = list(string)
  default     = []
}

variable "exclude" {
  description = "Leave out streams matching these globs."
  type        = list(string)
  default     = []
}

variable "parallel" {
  description = "Streams backed up at once by the function."
  type        = number
  default     = 2
}

variable "memory_mb" {
  description = "Memory of the backup function. Each stream in flight needs about (workers + buffer blocks) x block size plus the server's window: ~200 MiB."
  type        = number
  default     = 1024
}

variable "timeout_seconds" {
  description = "Timeout of the backup function (at most 900). Streams that cannot finish in it are deferred and reported."
  type        = number
  default     = 900

  validation {
    condition     = var.timeout_seconds >= 60 && var.timeout_seconds <= 900
    error_message = "timeout_seconds must be between 60 and 900 (the Lambda maximum)."
  }
}

variable "safety_margin_seconds" {
  description = "Seconds kept free at the end of an invocation for sealing and reporting: a stream is started only if it is estimated to finish before."
  type        = number
  default     = 30
}

variable "assumed_rate" {
  description = "Stream bytes per second per stream assumed before the first stream has been measured (e.g. 20MiB)."
  type        = string
  default     = "20MiB"
}

variable "retry_attempts" {
  description = "Lambda retries of a failed invocation (0-2). A retry gets the same event, hence the same run id, and resumes the run."
  type        = number
  default     = 1
}

variable "reserved_concurrency" {
  description = "Reserved concurrency of the backup function: 1 keeps runs from overlapping. -1: unreserved."
  type        = number
  default     = 1
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the EMF metrics the function logs."
  type        = string
  default     = "jsarchive"
}

variable "metrics_push_url" {
  description = "Optional Prometheus Pushgateway URL the function also pushes its metrics to."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the functions' CloudWatch log groups."
  type        = number
  default     = 365
}

variable "alarm_after_hours" {
  description = "Alarm when no successful backup has been reported for this many hours (1-168; at least the schedule's interval plus the run time)."
  type        = number
  default     = 26

  validation {
    condition     = var.alarm_after_hours >= 1 && var.alarm_after_hours <= 168
    error_message = "alarm_after_hours must be between 1 and 168 (CloudWatch evaluates at most 7 days)."
  }
}

variable "alarm_actions" {
  description = "ARNs notified when the alarm fires and clears (e.g. an SNS topic)."
  type        = list(string)
  default     = []
}

# -- prune -----------------------------------------------------------------------------------------------------------

variable "prune_schedule_expression" {
  description = "EventBridge Scheduler expression of a scheduled prune with the pruner role (null: no scheduled prune)."
  type        = string
  default     = null
}

variable "prune_keep" {
  description = "Retention policy of the scheduled prune, restic's rules: keys last, hourly, daily, weekly, monthly, yearly."
  type        = map(number)
  default     = { daily = 7, weekly = 5, monthly = 12 }

  validation {
    condition     = alltrue([for k in keys(var.prune_keep) : contains(["last", "hourly", "daily", "weekly", "monthly", "yearly"], k)])
    error_message = "prune_keep keys must be last, hourly, daily, weekly, monthly or yearly."
  }
}

# -- who may assume the roles ---------------------------------------------------------------------------------------

variable "writer_principals" {
  description = "Extra principals (ARNs) that may assume the backup writer role, e.g. the task role of a container job that finishes deferred streams."
  type        = list(string)
  default     = []
}

variable "restorer_principals" {
  description = "Principals (ARNs) that may assume the restorer role. Default: this account (any principal its IAM policies allow to)."
  type        = list(string)
  default     = []
}

variable "pruner_principals" {
  description = "Extra principals (ARNs) that may assume the pruner role (the scheduled prune function always may)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
