# The archive: two KMS keys and an S3 bucket with Object Lock, versioning, SSE-KMS, no public access and lifecycle.
#
# Why two keys. The *archive key* wraps jsarchive's per-backup data keys (key slots, docs/operations.md "Keys and
# roles"): the backup writer may only kms:Encrypt with it, so it can write backups it can never read. The *bucket
# key* is S3's default server-side encryption. S3 calls KMS with the caller's rights, and reading an SSE-KMS object
# or completing an SSE-KMS multipart upload needs kms:Decrypt: a writer that reads manifests (it must, to resume
# runs and seal sets) needs Decrypt on the bucket key. Keeping the two apart keeps the writer's rights on the key
# that protects backup contents at Encrypt only, and its bucket-key rights usable only through S3 (kms:ViaService).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  region      = data.aws_region.current.name
  bucket_name = coalesce(var.bucket_name, "${var.name}-archive-${local.account_id}-${local.region}")
  prefix      = trim(var.archive_prefix, "/")
  key_prefix  = "${local.prefix}/"
  archive_url = "s3://${local.bucket_name}/${local.prefix}"
  objects_arn = "${aws_s3_bucket.archive.arn}/${local.key_prefix}*"
  s3_service  = "s3.${local.region}.amazonaws.com"
  root_arn    = "arn:${local.partition}:iam::${local.account_id}:root"
  tags        = merge({ "app" = "jsarchive", "jsarchive:archive" = local.archive_url }, var.tags)
}

# -- keys ------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "key_admin" {
  # The account administers the keys; which principal may *use* them is decided by the IAM policies below.
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = [local.root_arn]
    }
  }
}

resource "aws_kms_key" "archive" {
  description             = "jsarchive ${local.archive_url}: wraps the data key of every backup (key slots)"
  deletion_window_in_days = var.kms_deletion_window_days
  enable_key_rotation     = true
  multi_region            = var.kms_multi_region
  policy                  = data.aws_iam_policy_document.key_admin.json
  tags                    = local.tags
}

resource "aws_kms_alias" "archive" {
  name          = "alias/${var.name}-archive"
  target_key_id = aws_kms_key.archive.key_id
}

resource "aws_kms_key" "bucket" {
  description             = "jsarchive ${local.archive_url}: S3 default encryption (SSE-KMS) of the archive bucket"
  deletion_window_in_days = var.kms_deletion_window_days
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.key_admin.json
  tags                    = local.tags
}

resource "aws_kms_alias" "bucket" {
  name          = "alias/${var.name}-bucket"
  target_key_id = aws_kms_key.bucket.key_id
}

# -- the bucket ------------------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "archive" {
  bucket              = local.bucket_name
  object_lock_enabled = true
  tags                = local.tags
}

resource "aws_s3_bucket_ownership_controls" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "archive" {
  bucket                  = aws_s3_bucket.archive.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "archive" {
  bucket = aws_s3_bucket.archive.id
  versioning_configuration {
    status = "Enabled" # Object Lock needs it; jsarchive never overwrites, and prune deletes every version
  }
}

resource "aws_s3_bucket_object_lock_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.archive]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.bucket.arn
    }
    bucket_key_enabled = true # one KMS call per bucket key period instead of one per object
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "archive" {
  bucket = aws_s3_bucket.archive.id

  rule {
    # A backup that fails aborts its own upload; one that is killed (a function's timeout) cannot.
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    # Only data objects go cold: manifests, refs and sets are read by ls, verify, prune and every restore's
    # preflight, and must stay readable without a thaw.
    id     = "data-to-cold-storage"
    status = "Enabled"
    filter {
      prefix = "${local.key_prefix}data/"
    }
    transition {
      days          = var.data_transition_days
      storage_class = var.data_storage_class
    }
  }

  rule {
    id     = "remove-expired-delete-markers"
    status = "Enabled"
    filter {}
    expiration {
      expired_object_delete_marker = true
    }
  }

  depends_on = [aws_s3_bucket_versioning.archive]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "TlsOnly"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.archive.arn,
      "${aws_s3_bucket.archive.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    # Also in the writer's own policy; here it holds even if someone attaches more to the role.
    sid    = "WriterNeverDeletesOrUnlocks"
    effect = "Deny"
    actions = [
      "s3:DeleteObject",
      "s3:DeleteObjectVersion",
      "s3:BypassGovernanceRetention",
      "s3:PutObjectRetention",
      "s3:PutObjectLegalHold",
    ]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.writer.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "archive" {
  bucket     = aws_s3_bucket.archive.id
  policy     = data.aws_iam_policy_document.bucket.json
  depends_on = [aws_s3_bucket_public_access_block.archive]
}

# -- the NATS credentials --------------------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "nats" {
  count       = var.nats_secret_arn == null ? 1 : 0
  name_prefix = "${var.name}/nats-"
  description = "NATS credentials of the jsarchive backup function (a natscli .creds file, an nkey seed, or JSON with user/password/token); set the value yourself"
  tags        = local.tags
}

locals {
  nats_secret_arn = var.nats_secret_arn != null ? var.nats_secret_arn : aws_secretsmanager_secret.nats[0].arn
}
