# The archive in the primary region, and a weekly DR drill in another region: the newest account backup set is
# restored into the DR region's NATS cluster under DRILL_ names and subjects (`jsarchive drill`, operation "drill"),
# checked against its manifests, timed (RTO, RPO) and removed; the evidence report goes to drills/ in the archive.
# The key slots are opened with the DR region's own replica of the archive key, so a restore there is known to work
# before it is needed.
#
# The drill runs the same image (pushed to ECR in the DR region too) with the module's restorer policy. It reads the
# bucket across regions; if the primary region is down, S3 in it is too: replicate the bucket (S3 Replication with
# Object Lock) for that case, and point a drill at the replica.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.70, < 6.0"
    }
  }
}

variable "primary_region" {
  type    = string
  default = "eu-west-1"
}

variable "dr_region" {
  type    = string
  default = "eu-central-1"
}

variable "image_uri" {
  description = "The jsarchive image in ECR in the primary region."
  type        = string
}

variable "dr_image_uri" {
  description = "The same image in ECR in the DR region (Lambda pulls images from its own region only)."
  type        = string
}

variable "nats_url" {
  type = string
}

variable "dr_nats_url" {
  description = "NATS servers of the DR region's cluster, which the drill restores into."
  type        = string
}

variable "dr_cluster" {
  description = "Name of the DR region's NATS cluster (the drill's --cluster)."
  type        = string
}

variable "dr_nats_secret_arn" {
  description = "Secrets Manager secret with the DR cluster's NATS credentials (.creds text, nkey seed or JSON)."
  type        = string
}

variable "dr_subnet_ids" {
  description = "Private subnets in the DR region from which the drill function reaches the DR NATS cluster."
  type        = list(string)
}

variable "dr_security_group_ids" {
  type = list(string)
}

provider "aws" {
  region = var.primary_region
}

provider "aws" {
  alias  = "dr"
  region = var.dr_region
}

module "archive" {
  source = "../../modules/aws-archive"

  name             = "jsarchive"
  archive_prefix   = "prod"
  kms_multi_region = true
  image_uri        = var.image_uri
  nats_url         = var.nats_url
}

check "drill_in_another_region" {
  assert {
    condition     = var.dr_region != var.primary_region
    error_message = "the DR drill must run in another region than the archive"
  }
}

# The DR region's replica of the archive key: restores there do not depend on KMS in the primary region.
resource "aws_kms_replica_key" "archive_dr" {
  provider                = aws.dr
  description             = "jsarchive archive key, replica for DR drills and restores in ${var.dr_region}"
  primary_key_arn         = module.archive.archive_key_arn
  deletion_window_in_days = 30
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "drill_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "drill" {
  name               = "jsarchive-dr-drill"
  assume_role_policy = data.aws_iam_policy_document.drill_trust.json
}

resource "aws_iam_role_policy_attachment" "drill_reads_the_archive" {
  role       = aws_iam_role.drill.name
  policy_arn = module.archive.restorer_policy_arn
}

data "aws_iam_policy_document" "drill" {
  statement {
    sid       = "UnwrapWithTheReplicaKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_replica_key.archive_dr.arn]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "kms:EncryptionContextKeys"
      values   = ["jsarchive:backup-id"]
    }
    condition {
      test     = "Null"
      variable = "kms:EncryptionContextKeys"
      values   = ["false"]
    }
  }

  statement {
    sid       = "WriteDrillEvidenceOnly"
    actions   = ["s3:PutObject"]
    resources = ["${module.archive.bucket_arn}/prod/drills/*"]
  }

  statement {
    sid       = "BucketEncryptionForTheEvidence"
    actions   = ["kms:GenerateDataKey"]
    resources = [module.archive.bucket_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.primary_region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "DrNatsCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.dr_nats_secret_arn]
  }

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${var.dr_region}:${data.aws_caller_identity.current.account_id}:log-group:/aws/lambda/jsarchive-dr-drill:*"]
  }
}

resource "aws_iam_role_policy_attachment" "drill_vpc" {
  role       = aws_iam_role.drill.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy" "drill" {
  name   = "dr-drill"
  role   = aws_iam_role.drill.id
  policy = data.aws_iam_policy_document.drill.json
}

resource "aws_cloudwatch_log_group" "drill" {
  provider          = aws.dr
  name              = "/aws/lambda/jsarchive-dr-drill"
  retention_in_days = 365
}

resource "aws_lambda_function" "drill" {
  provider      = aws.dr
  function_name = "jsarchive-dr-drill"
  description   = "jsarchive DR drill in ${var.dr_region}: the newest set of ${module.archive.archive_url} restored and checked"
  role          = aws_iam_role.drill.arn
  package_type  = "Image"
  image_uri     = var.dr_image_uri
  memory_size   = 1024
  timeout       = 900
  ephemeral_storage {
    size = 512
  }

  vpc_config {
    subnet_ids         = var.dr_subnet_ids
    security_group_ids = var.dr_security_group_ids
  }

  environment {
    variables = {
      JSARCHIVE_OPERATION     = "drill"
      JSARCHIVE_URL           = module.archive.archive_url
      JSARCHIVE_DRILL_CLUSTER = var.dr_cluster
      JSARCHIVE_KMS_KEY       = aws_kms_replica_key.archive_dr.arn
      JSARCHIVE_NATS_SECRET   = var.dr_nats_secret_arn
      NATS_URL                = var.dr_nats_url
    }
  }

  depends_on = [aws_cloudwatch_log_group.drill, aws_iam_role_policy.drill, aws_iam_role_policy_attachment.drill_vpc]
}

data "aws_iam_policy_document" "scheduler_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "drill_scheduler" {
  name               = "jsarchive-dr-drill-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_trust.json
}

resource "aws_iam_role_policy" "drill_scheduler" {
  name = "invoke-drill"
  role = aws_iam_role.drill_scheduler.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = "lambda:InvokeFunction", Resource = aws_lambda_function.drill.arn }]
  })
}

resource "aws_scheduler_schedule" "drill" {
  provider            = aws.dr
  name                = "jsarchive-dr-drill"
  schedule_expression = "cron(0 6 ? * MON *)"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.drill.arn
    role_arn = aws_iam_role.drill_scheduler.arn
    input    = jsonencode({ operation = "drill" })
  }
}

resource "aws_cloudwatch_metric_alarm" "drill_failed" {
  provider            = aws.dr
  alarm_name          = "jsarchive-dr-drill-not-passing"
  alarm_description   = "The weekly DR drill in ${var.dr_region} has not passed for a week."
  namespace           = "jsarchive"
  metric_name         = "Success"
  dimensions          = { Operation = "verify", Archive = module.archive.archive_url }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = 168
  datapoints_to_alarm = 168
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
}

output "archive_url" {
  value = module.archive.archive_url
}

output "dr_archive_key_arn" {
  description = "Restores in the DR region: --kms-key with this ARN (and the restorer role)."
  value       = aws_kms_replica_key.archive_dr.arn
}
