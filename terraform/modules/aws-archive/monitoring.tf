# The alarm for unattended runs: no successful backup reported in time.
#
# The function logs a CloudWatch EMF document per run (namespace var.metrics_namespace, dimensions Operation and
# Archive) with Success = 1 only when every stream was backed up and the set written. Missing data is breaching:
# a function that never ran, failed before reporting or keeps deferring streams alarms just like one that fails.

resource "aws_cloudwatch_metric_alarm" "no_recent_backup" {
  count               = var.create_function ? 1 : 0
  alarm_name          = "${var.name}-no-successful-backup"
  alarm_description   = "No successful jsarchive account backup into ${local.archive_url} for ${var.alarm_after_hours} hour(s). Check the ${local.function_name} logs (event jsarchive.run)."
  namespace           = var.metrics_namespace
  metric_name         = "Success"
  dimensions          = { Operation = "account-backup", Archive = local.archive_url }
  statistic           = "Maximum"
  period              = 3600
  evaluation_periods  = var.alarm_after_hours
  datapoints_to_alarm = var.alarm_after_hours
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
