output "archive_url" {
  description = "The archive URL for jsarchive (s3://bucket/prefix)."
  value       = local.archive_url
}

output "bucket_name" {
  value = aws_s3_bucket.archive.id
}

output "bucket_arn" {
  value = aws_s3_bucket.archive.arn
}

output "archive_key_arn" {
  description = "KMS key for jsarchive's key slots: --kms-key / $JSARCHIVE_KMS_KEY."
  value       = aws_kms_key.archive.arn
}

output "bucket_key_arn" {
  description = "KMS key of the bucket's default encryption (SSE-KMS)."
  value       = aws_kms_key.bucket.arn
}

output "nats_secret_arn" {
  description = "Secrets Manager secret the backup function reads the NATS credentials from."
  value       = local.nats_secret_arn
}

output "writer_role_arn" {
  value = aws_iam_role.writer.arn
}

output "restorer_role_arn" {
  value = aws_iam_role.restorer.arn
}

output "pruner_role_arn" {
  value = aws_iam_role.pruner.arn
}

output "writer_policy_arn" {
  value = aws_iam_policy.writer.arn
}

output "restorer_policy_arn" {
  description = "Attach to other roles that restore or drill from this archive (e.g. in a DR region)."
  value       = aws_iam_policy.restorer.arn
}

output "pruner_policy_arn" {
  value = aws_iam_policy.pruner.arn
}

output "function_name" {
  value = var.create_function ? aws_lambda_function.backup[0].function_name : null
}

output "schedule_arn" {
  value = var.create_function ? aws_scheduler_schedule.backup[0].arn : null
}

output "alarm_arn" {
  value = var.create_function ? aws_cloudwatch_metric_alarm.no_recent_backup[0].arn : null
}
