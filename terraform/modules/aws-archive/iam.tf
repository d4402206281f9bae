# Least-privilege roles. Every S3 right is limited to the archive prefix; every KMS right to one key.
#
# | role     | S3                                                            | archive key        | bucket key (via S3 only) |
# |----------|---------------------------------------------------------------|--------------------|--------------------------|
# | writer   | list, read (HEAD before create, manifests/refs/runs), put,     | Encrypt            | GenerateDataKey, Decrypt |
# |          | abort its own multipart uploads; never delete or unlock       |                    |                          |
# | restorer | list, read, restore from GLACIER/DEEP_ARCHIVE (thaw)          | Decrypt            | Decrypt                  |
# | pruner   | list (versions, uploads), read (incl. lock state), delete,    | none               | Decrypt                  |
# |          | abort uploads; never bypass governance retention or unlock    |                    |                          |

locals {
  # kms:EncryptionContextKeys: every request carries exactly jsarchive's context key (docs/operations.md).
  jsarchive_context = [
    {
      test     = "ForAllValues:StringEquals"
      variable = "kms:EncryptionContextKeys"
      values   = ["jsarchive:backup-id"]
    },
    {
      test     = "Null"
      variable = "kms:EncryptionContextKeys"
      values   = ["false"]
    },
  ]
  never_unlock = [
    "s3:BypassGovernanceRetention",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:DeleteBucket",
  ]
}

# -- backup writer ---------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "writer" {
  statement {
    sid       = "ListTheArchive"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.archive.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.key_prefix}*"]
    }
  }

  statement {
    # HEAD (which S3 authorizes as GetObject) checks that a key is free before it is written, and reads manifests,
    # refs, sets and run records to resume and seal runs. The data objects it can read are sealed under data keys
    # this role cannot unwrap (Encrypt only on the archive key).
    sid       = "ReadTheArchive"
    actions   = ["s3:GetObject"]
    resources = [local.objects_arn]
  }

  statement {
    # PutObject covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload. No object ACLs, tags,
    # retention or legal hold: the bucket's default retention locks every new object.
    sid       = "WriteTheArchive"
    actions   = ["s3:PutObject", "s3:AbortMultipartUpload"]
    resources = [local.objects_arn]
  }

  statement {
    sid       = "WrapDataKeysOnly"
    actions   = ["kms:Encrypt"]
    resources = [aws_kms_key.archive.arn]
    dynamic "condition" {
      for_each = local.jsarchive_context
      content {
        test     = condition.value.test
        variable = condition.value.variable
        values   = condition.value.values
      }
    }
  }

  statement {
    # S3 encrypts new objects (and completes multipart uploads) with the bucket key on the caller's behalf.
    sid       = "BucketEncryptionThroughS3Only"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.bucket.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_service]
    }
  }

  statement {
    sid       = "ReadTheNatsSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.nats_secret_arn]
  }

  statement {
    sid       = "NeverDeleteOrUnlock"
    effect    = "Deny"
    actions   = concat(["s3:DeleteObject", "s3:DeleteObjectVersion"], local.never_unlock)
    resources = [aws_s3_bucket.archive.arn, "${aws_s3_bucket.archive.arn}/*"]
  }

  statement {
    sid       = "NeverOpenBackups"
    effect    = "Deny"
    actions   = ["kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:CreateGrant"]
    resources = [aws_kms_key.archive.arn]
  }
}

resource "aws_iam_policy" "writer" {
  name        = "${var.name}-backup-writer"
  description = "jsarchive backup writer for ${local.archive_url}: write-only, never delete, never read backups"
  policy      = data.aws_iam_policy_document.writer.json
  tags        = local.tags
}

data "aws_iam_policy_document" "writer_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
  dynamic "statement" {
    for_each = length(var.writer_principals) > 0 ? [1] : []
    content {
      actions = ["sts:AssumeRole"]
      principals {
        type        = "AWS"
        identifiers = var.writer_principals
      }
    }
  }
}

resource "aws_iam_role" "writer" {
  name               = "${var.name}-backup-writer"
  assume_role_policy = data.aws_iam_policy_document.writer_trust.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "writer" {
  role       = aws_iam_role.writer.name
  policy_arn = aws_iam_policy.writer.arn
}

# -- restorer --------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "restorer" {
  statement {
    sid       = "ListTheArchive"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.archive.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.key_prefix}*"]
    }
  }

  statement {
    sid       = "ReadAndThawTheArchive"
    actions   = ["s3:GetObject", "s3:RestoreObject"]
    resources = [local.objects_arn]
  }

  statement {
    sid       = "UnwrapDataKeys"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.archive.arn]
    dynamic "condition" {
      for_each = local.jsarchive_context
      content {
        test     = condition.value.test
        variable = condition.value.variable
        values   = condition.value.values
      }
    }
  }

  statement {
    sid       = "BucketDecryptionThroughS3Only"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.bucket.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_service]
    }
  }
}

resource "aws_iam_policy" "restorer" {
  name        = "${var.name}-restorer"
  description = "jsarchive restorer for ${local.archive_url}: read, thaw and open backups"
  policy      = data.aws_iam_policy_document.restorer.json
  tags        = local.tags
}

data "aws_iam_policy_document" "restorer_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = length(var.restorer_principals) > 0 ? var.restorer_principals : [local.root_arn]
    }
  }
}

resource "aws_iam_role" "restorer" {
  name               = "${var.name}-restorer"
  assume_role_policy = data.aws_iam_policy_document.restorer_trust.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "restorer" {
  role       = aws_iam_role.restorer.name
  policy_arn = aws_iam_policy.restorer.arn
}

# -- pruner ----------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "pruner" {
  statement {
    sid       = "ListTheArchive"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [aws_s3_bucket.archive.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.key_prefix}*"]
    }
  }

  statement {
    sid       = "ListUnfinishedUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [aws_s3_bucket.archive.arn]
  }

  statement {
    # Lock state comes back on HEAD only with GetObjectRetention / GetObjectLegalHold: prune keeps locked backups.
    sid = "ReadTheArchiveAndItsLocks"
    actions = [
      "s3:GetObject",
      "s3:GetObjectVersion",
      "s3:GetObjectRetention",
      "s3:GetObjectLegalHold",
      "s3:ListMultipartUploadParts",
    ]
    resources = [local.objects_arn]
  }

  statement {
    sid       = "DeleteWhatThePolicyDropsAndLeftovers"
    actions   = ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload"]
    resources = [local.objects_arn]
  }

  statement {
    sid       = "BucketDecryptionThroughS3Only"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.bucket.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_service]
    }
  }

  statement {
    sid       = "NeverUnlock"
    effect    = "Deny"
    actions   = local.never_unlock
    resources = [aws_s3_bucket.archive.arn, "${aws_s3_bucket.archive.arn}/*"]
  }

  statement {
    # Pruning reads only the manifests' clear envelopes.
    sid       = "NeverOpenBackups"
    effect    = "Deny"
    actions   = ["kms:*"]
    resources = [aws_kms_key.archive.arn]
  }
}

resource "aws_iam_policy" "pruner" {
  name        = "${var.name}-pruner"
  description = "jsarchive pruner for ${local.archive_url}: delete what the retention policy drops, never what is locked"
  policy      = data.aws_iam_policy_document.pruner.json
  tags        = local.tags
}

data "aws_iam_policy_document" "pruner_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
  dynamic "statement" {
    for_each = length(var.pruner_principals) > 0 ? [1] : []
    content {
      actions = ["sts:AssumeRole"]
      principals {
        type        = "AWS"
        identifiers = var.pruner_principals
      }
    }
  }
}

resource "aws_iam_role" "pruner" {
  name               = "${var.name}-pruner"
  assume_role_policy = data.aws_iam_policy_document.pruner_trust.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "pruner" {
  role       = aws_iam_role.pruner.name
  policy_arn = aws_iam_policy.pruner.arn
}

# -- what the functions need besides the archive: their logs, and the VPC when they run in one -----------------------

data "aws_iam_policy_document" "function_logs" {
  statement {
    sid       = "OwnLogGroups"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/lambda/${var.name}-*:*"]
  }
}

resource "aws_iam_policy" "function_logs" {
  name        = "${var.name}-function-logs"
  description = "jsarchive functions: write their own log streams (the EMF metrics arrive through them)"
  policy      = data.aws_iam_policy_document.function_logs.json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "writer_logs" {
  role       = aws_iam_role.writer.name
  policy_arn = aws_iam_policy.function_logs.arn
}

resource "aws_iam_role_policy_attachment" "pruner_logs" {
  role       = aws_iam_role.pruner.name
  policy_arn = aws_iam_policy.function_logs.arn
}

resource "aws_iam_role_policy_attachment" "writer_vpc" {
  count      = length(var.subnet_ids) > 0 ? 1 : 0
  role       = aws_iam_role.writer.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "pruner_vpc" {
  count      = length(var.subnet_ids) > 0 ? 1 : 0
  role       = aws_iam_role.pruner.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}
