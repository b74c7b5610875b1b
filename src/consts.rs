//! Every label, annotation and env name the webhook reads or writes, in one place.

/// Namespace label that opts a namespace in (matched by the webhook configuration's namespaceSelector).
pub const NAMESPACE_OPT_IN_LABEL: &str = "harbor-iam-webhook/inject";
/// Pod annotation: `disabled` leaves the pod alone.
pub const INJECT_ANNOTATION: &str = "harbor-iam-webhook/inject";
pub const INJECT_DISABLED: &str = "disabled";
/// Pod annotation written on every pod the webhook changed (informational, never trusted).
pub const STATUS_ANNOTATION: &str = "harbor-iam-webhook/status";
pub const STATUS_INJECTED: &str = "injected";
/// Pod annotation overriding the configured AWS region.
pub const REGION_ANNOTATION: &str = "harbor-iam-webhook/aws-region";

/// Default labels that mark a pod as Harbor (any one matches).
pub const DEFAULT_HARBOR_LABELS: &[(&str, &str)] = &[
    ("app", "harbor"),
    ("app.kubernetes.io/name", "harbor"),
    ("app.kubernetes.io/name", "harbor-next"),
    ("app.kubernetes.io/part-of", "harbor"),
];
/// Default component label keys, first match wins (`app.kubernetes.io/component` beats `component`).
pub const DEFAULT_COMPONENT_LABELS: &[&str] = &["app.kubernetes.io/component", "component"];

pub const DEFAULT_SERVICE_ACCOUNT: &str = "harbor-sa";
/// Images known to carry the RDS IAM code: the harbor-next builds.
pub const DEFAULT_IAM_CAPABLE_IMAGES: &[&str] = &["8gears.container-registry.com/8gcr/harbor-*"];

// Env names Harbor reads.
pub const POSTGRESQL_USE_IAM_AUTH: &str = "POSTGRESQL_USE_IAM_AUTH";
pub const POSTGRESQL_AWS_REGION: &str = "POSTGRESQL_AWS_REGION";
pub const POSTGRESQL_SSLMODE: &str = "POSTGRESQL_SSLMODE";
pub const POSTGRESQL_PASSWORD: &str = "POSTGRESQL_PASSWORD";
pub const POSTGRESQL_URL: &str = "POSTGRESQL_URL";
pub const HARBOR_DATABASE_USE_IAM_AUTH: &str = "HARBOR_DATABASE_USE_IAM_AUTH";
pub const HARBOR_DATABASE_AWS_REGION: &str = "HARBOR_DATABASE_AWS_REGION";
pub const HARBOR_DATABASE_SSLMODE: &str = "HARBOR_DATABASE_SSLMODE";
pub const HARBOR_DATABASE_PASSWORD: &str = "HARBOR_DATABASE_PASSWORD";
// Env names libpq (and pgx, which Harbor's pool uses) reads for what a connection string leaves
// unset.
pub const PGPASSWORD: &str = "PGPASSWORD";
pub const PGSSLMODE: &str = "PGSSLMODE";
pub const PGSERVICE: &str = "PGSERVICE";
/// Feature gate every harbor-next DB client checks before it uses IAM auth.
pub const IAM_FEATURE_GATE: &str = "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH";

/// sslmode values at least as strong as `require` (libpq compares case-sensitively).
pub const STRONG_SSLMODES: &[&str] = &["require", "verify-ca", "verify-full"];
pub const SSLMODE_REQUIRE: &str = "require";

// IRSA, as amazon-eks-pod-identity-webhook names things (so that, if it also runs, it finds
// everything in place and changes nothing).
pub const EKS_ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
pub const EKS_AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
pub const EKS_STS_REGIONAL_ANNOTATION: &str = "eks.amazonaws.com/sts-regional-endpoints";
pub const EKS_TOKEN_EXPIRATION_ANNOTATION: &str = "eks.amazonaws.com/token-expiration";
pub const EKS_SKIP_CONTAINERS_ANNOTATION: &str = "eks.amazonaws.com/skip-containers";
pub const EKS_SKIP_POD_LABEL: &str = "eks.amazonaws.com/skip-pod-identity-webhook";
pub const EKS_DEFAULT_AUDIENCE: &str = "sts.amazonaws.com";
pub const EKS_TOKEN_VOLUME: &str = "aws-iam-token";
pub const EKS_TOKEN_MOUNT_PATH: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
pub const EKS_TOKEN_FILE: &str = "token";
/// A token lifetime below this is raised to it (amazon-eks-pod-identity-webhook v0.6.17
/// `pkg/validation.go` `ValidateMinTokenExpiration`); there is no upper bound.
pub const EKS_MIN_TOKEN_EXPIRATION: i64 = 600;
pub const EKS_DEFAULT_TOKEN_EXPIRATION: i64 = 86400;
pub const AWS_ROLE_ARN: &str = "AWS_ROLE_ARN";
pub const AWS_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
pub const AWS_REGION: &str = "AWS_REGION";
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
pub const AWS_STS_REGIONAL_ENDPOINTS: &str = "AWS_STS_REGIONAL_ENDPOINTS";
/// Static keys: the AWS SDK's default chain takes them before web identity.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

// Registry storage keys (opt-in blanking).
pub const REGISTRY_S3_ACCESS_KEY: &str = "REGISTRY_STORAGE_S3_ACCESSKEY";
pub const REGISTRY_S3_SECRET_KEY: &str = "REGISTRY_STORAGE_S3_SECRETKEY";
