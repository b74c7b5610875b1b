//! harbor-iam-webhook: a mutating admission webhook that switches Harbor's database clients
//! to AWS RDS IAM authentication.

pub mod consts;
pub mod facts;
pub mod mutate;
