# A production archive in one region: nightly account backup, weekly prune, an alarm to an SNS topic.
#
#   docker build -t jsarchive . && docker tag/push to ECR (see docs/cloud.md), then:
#   terraform init && terraform apply -var image_uri=… -var nats_url=nats://nats.internal:4222
#   aws secretsmanager put-secret-value --secret-id "$(terraform output -raw nats_secret_arn)" \
#       --secret-string file://backup.creds

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "image_uri" {
  description = "The jsarchive image in ECR (this account and region)."
  type        = string
}

variable "nats_url" {
  type = string
}

variable "break_glass_recipient" {
  description = "An age recipient (age1…) whose identity is kept offline: opens every backup if KMS is lost."
  type        = string
  default     = null
}

variable "subnet_ids" {
  type    = list(string)
  default = []
}

variable "security_group_ids" {
  type    = list(string)
  default = []
}

provider "aws" {
  region = var.region
}

resource "aws_sns_topic" "alerts" {
  name              = "jsarchive-alerts"
  kms_master_key_id = "alias/aws/sns"
}

module "archive" {
  source = "../../modules/aws-archive"

  name           = "jsarchive"
  archive_prefix = "prod"

  object_lock_mode     = "COMPLIANCE"
  object_lock_days     = 35
  data_transition_days = 30
  data_storage_class   = "DEEP_ARCHIVE"

  image_uri           = var.image_uri
  nats_url            = var.nats_url
  subnet_ids          = var.subnet_ids
  security_group_ids  = var.security_group_ids
  age_recipients      = var.break_glass_recipient == null ? [] : [var.break_glass_recipient]
  schedule_expression = "cron(0 2 * * ? *)"
  exclude             = ["TMP_*"]

  prune_schedule_expression = "cron(30 4 ? * SUN *)"
  prune_keep                = { daily = 7, weekly = 5, monthly = 12 }

  alarm_after_hours = 26
  alarm_actions     = [aws_sns_topic.alerts.arn]
}

output "archive_url" {
  value = module.archive.archive_url
}

output "nats_secret_arn" {
  value = module.archive.nats_secret_arn
}

output "archive_key_arn" {
  value = module.archive.archive_key_arn
}

output "restorer_role_arn" {
  value = module.archive.restorer_role_arn
}
