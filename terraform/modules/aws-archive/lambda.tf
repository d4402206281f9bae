# The scheduled runs: the container image as a Lambda function, triggered by EventBridge Scheduler.
#
# The schedule's input carries the scheduler's execution id as the run id: a retry of the same trigger (by the
# scheduler or by Lambda's asynchronous retries) resumes that run instead of starting over, and a stream the
# function had no time for stays owed to the run (reported in the logs with the command that finishes it).

locals {
  function_name = "${var.name}-backup"
  vpc           = length(var.subnet_ids) > 0
  common_env = merge(
    {
      JSARCHIVE_URL               = local.archive_url
      JSARCHIVE_METRICS_NAMESPACE = var.metrics_namespace
    },
    var.metrics_push_url == null ? {} : { JSARCHIVE_METRICS_PUSH = var.metrics_push_url },
  )
  backup_env = merge(
    local.common_env,
    {
      JSARCHIVE_OPERATION     = "account-backup"
      NATS_URL                = var.nats_url
      JSARCHIVE_NATS_SECRET   = local.nats_secret_arn
      JSARCHIVE_KMS_KEY       = aws_kms_key.archive.arn
      JSARCHIVE_PARALLEL      = tostring(var.parallel)
      JSARCHIVE_SAFETY_MARGIN = tostring(var.safety_margin_seconds)
      JSARCHIVE_ASSUMED_RATE  = var.assumed_rate
    },
    length(var.age_recipients) > 0 ? { JSARCHIVE_RECIPIENTS = join(",", var.age_recipients) } : {},
    length(var.include) > 0 ? { JSARCHIVE_INCLUDE = join(",", var.include) } : {},
    length(var.exclude) > 0 ? { JSARCHIVE_EXCLUDE = join(",", var.exclude) } : {},
  )
  prune_env = merge(
    local.common_env,
    { JSARCHIVE_OPERATION = "prune", JSARCHIVE_PRUNE_CONFIRM = "true" },
    { for k, v in var.prune_keep : "JSARCHIVE_KEEP_${upper(k)}" => tostring(v) },
  )
}

resource "aws_cloudwatch_log_group" "backup" {
  count             = var.create_function ? 1 : 0
  name              = "/aws/lambda/${local.function_name}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "backup" {
  count         = var.create_function ? 1 : 0
  function_name = local.function_name
  description   = "jsarchive: scheduled account backup of ${var.nats_url} into ${local.archive_url}"
  role          = aws_iam_role.writer.arn
  package_type  = "Image"
  image_uri     = var.image_uri
  architectures = ["x86_64"]
  memory_size   = var.memory_mb
  timeout       = var.timeout_seconds
  # The pipeline streams without temporary files; /tmp stays at the minimum.
  ephemeral_storage {
    size = 512
  }
  reserved_concurrent_executions = var.reserved_concurrency

  environment {
    variables = local.backup_env
  }

  dynamic "vpc_config" {
    for_each = local.vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.image_uri != null
      error_message = "image_uri is required when create_function is true: push the jsarchive image to ECR first."
    }
  }

  depends_on = [
    aws_cloudwatch_log_group.backup,
    aws_iam_role_policy_attachment.writer,
    aws_iam_role_policy_attachment.writer_logs,
    aws_iam_role_policy_attachment.writer_vpc,
  ]
}

resource "aws_lambda_function_event_invoke_config" "backup" {
  count                        = var.create_function ? 1 : 0
  function_name                = aws_lambda_function.backup[0].function_name
  maximum_retry_attempts       = var.retry_attempts
  maximum_event_age_in_seconds = 3600
}

# -- EventBridge Scheduler -------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "scheduler_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count              = var.create_function ? 1 : 0
  name               = "${var.name}-scheduler"
  assume_role_policy = data.aws_iam_policy_document.scheduler_trust.json
  tags               = local.tags
}

data "aws_iam_policy_document" "scheduler" {
  count = var.create_function ? 1 : 0
  statement {
    sid     = "InvokeTheFunctions"
    actions = ["lambda:InvokeFunction"]
    resources = concat(
      [aws_lambda_function.backup[0].arn],
      [for f in aws_lambda_function.prune : f.arn],
    )
  }
}

resource "aws_iam_role_policy" "scheduler" {
  count  = var.create_function ? 1 : 0
  name   = "invoke-jsarchive"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler[0].json
}

resource "aws_scheduler_schedule" "backup" {
  count                        = var.create_function ? 1 : 0
  name                         = "${var.name}-account-backup"
  description                  = "jsarchive account backup into ${local.archive_url}"
  schedule_expression          = var.schedule_expression
  schedule_expression_timezone = var.schedule_timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.backup[0].arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = jsonencode({ operation = "account-backup", run = "<aws.scheduler.execution-id>" })

    retry_policy {
      maximum_retry_attempts       = 2
      maximum_event_age_in_seconds = 3600
    }
  }
}

# -- the scheduled prune (optional) ----------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "prune" {
  count             = var.create_function && var.prune_schedule_expression != null ? 1 : 0
  name              = "/aws/lambda/${var.name}-prune"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_lambda_function" "prune" {
  count         = var.create_function && var.prune_schedule_expression != null ? 1 : 0
  function_name = "${var.name}-prune"
  description   = "jsarchive: scheduled prune of ${local.archive_url}"
  role          = aws_iam_role.pruner.arn
  package_type  = "Image"
  image_uri     = var.image_uri
  architectures = ["x86_64"]
  memory_size   = 512
  timeout       = 900
  ephemeral_storage {
    size = 512
  }
  reserved_concurrent_executions = 1

  environment {
    variables = local.prune_env
  }

  dynamic "vpc_config" {
    for_each = local.vpc ? [1] : []
    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  tags = local.tags

  depends_on = [
    aws_cloudwatch_log_group.prune,
    aws_iam_role_policy_attachment.pruner,
    aws_iam_role_policy_attachment.pruner_logs,
    aws_iam_role_policy_attachment.pruner_vpc,
  ]
}

resource "aws_scheduler_schedule" "prune" {
  count                        = var.create_function && var.prune_schedule_expression != null ? 1 : 0
  name                         = "${var.name}-prune"
  description                  = "jsarchive prune of ${local.archive_url}"
  schedule_expression          = var.prune_schedule_expression
  schedule_expression_timezone = var.schedule_timezone

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.prune[0].arn
    role_arn = aws_iam_role.scheduler[0].arn
    input    = jsonencode({ operation = "prune" })
  }
}
