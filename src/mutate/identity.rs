//! Web-identity injection: what amazon-eks-pod-identity-webhook adds for an IRSA
//! ServiceAccount, with the same names and the same "only if absent" rules, so that the result
//! does not depend on which webhook runs first and, if it also runs, it finds nothing to do.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};

use super::env::insert_env;
use super::{At, Edit};
use crate::consts::{
    AWS_DEFAULT_REGION, AWS_REGION, AWS_ROLE_ARN, AWS_STS_REGIONAL_ENDPOINTS,
    AWS_WEB_IDENTITY_TOKEN_FILE, EKS_AUDIENCE_ANNOTATION, EKS_DEFAULT_AUDIENCE,
    EKS_MIN_TOKEN_EXPIRATION, EKS_SKIP_CONTAINERS_ANNOTATION, EKS_SKIP_POD_LABEL,
    EKS_STS_REGIONAL_ANNOTATION, EKS_TOKEN_EXPIRATION_ANNOTATION, EKS_TOKEN_FILE,
    EKS_TOKEN_MOUNT_PATH, EKS_TOKEN_VOLUME,
};

/// Everything the injection needs, resolved from the pod, its ServiceAccount and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    pub role_arn: String,
    pub audience: String,
    pub regional_sts: bool,
    pub expiration_seconds: i64,
    pub region: String,
}

/// As the EKS webhook: raised to 600 s when lower, otherwise kept (no upper cap).
pub fn token_expiration(seconds: i64) -> i64 {
    seconds.max(EKS_MIN_TOKEN_EXPIRATION)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl WebIdentity {
    /// audience: SA annotation > default; regional STS: SA annotation > flag;
    /// expiry: pod annotation > SA annotation > flag, raised to 600 s when lower.
    pub fn resolve(
        pod: &Pod,
        role_arn: &str,
        sa_annotations: &BTreeMap<String, String>,
        default_regional_sts: bool,
        default_expiration: i64,
        region: &str,
    ) -> Self {
        let audience = sa_annotations
            .get(EKS_AUDIENCE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| EKS_DEFAULT_AUDIENCE.to_owned());
        let regional_sts = sa_annotations
            .get(EKS_STS_REGIONAL_ANNOTATION)
            .and_then(|v| parse_bool(v))
            .unwrap_or(default_regional_sts);
        let parse = |v: Option<&String>| v.and_then(|s| s.parse::<i64>().ok());
        let pod_annotation = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EKS_TOKEN_EXPIRATION_ANNOTATION));
        let expiration = parse(pod_annotation)
            .or_else(|| parse(sa_annotations.get(EKS_TOKEN_EXPIRATION_ANNOTATION)))
            .unwrap_or(default_expiration);
        WebIdentity {
            role_arn: role_arn.to_owned(),
            audience,
            regional_sts,
            expiration_seconds: token_expiration(expiration),
            region: region.to_owned(),
        }
    }
}

/// A pod labelled `eks.amazonaws.com/skip-pod-identity-webhook` (any value) gets nothing.
pub fn pod_opted_out(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EKS_SKIP_POD_LABEL))
}

fn skipped_containers(pod: &Pod) -> BTreeSet<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EKS_SKIP_CONTAINERS_ANNOTATION))
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

fn token_path(pod: &Pod) -> String {
    let path = format!("{EKS_TOKEN_MOUNT_PATH}/{EKS_TOKEN_FILE}");
    let windows = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .is_some_and(|n| {
            n.get("kubernetes.io/os").map(String::as_str) == Some("windows")
                || n.get("beta.kubernetes.io/os").map(String::as_str) == Some("windows")
        });
    if windows {
        format!("C:{}", path.replace('/', "\\"))
    } else {
        path
    }
}

fn literal(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// Returns true when it changed the container.
fn inject_container(
    c: &mut Container,
    at: At,
    wi: &WebIdentity,
    token_file: &str,
    edits: &mut Vec<Edit>,
) -> bool {
    let has = |names: &[&str]| {
        c.env
            .iter()
            .flatten()
            .any(|e| names.contains(&e.name.as_str()))
    };
    let (identity, region, sts) = (
        has(&[AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE]),
        has(&[AWS_REGION, AWS_DEFAULT_REGION]),
        has(&[AWS_STS_REGIONAL_ENDPOINTS]),
    );
    let mut add = Vec::new();
    if !sts && wi.regional_sts {
        add.push(literal(AWS_STS_REGIONAL_ENDPOINTS, "regional"));
    }
    if !region && !wi.region.is_empty() {
        add.push(literal(AWS_DEFAULT_REGION, &wi.region));
        add.push(literal(AWS_REGION, &wi.region));
    }
    if !identity {
        add.push(literal(AWS_ROLE_ARN, &wi.role_arn));
        add.push(literal(AWS_WEB_IDENTITY_TOKEN_FILE, token_file));
    }
    let mut changed = !add.is_empty();
    for entry in add {
        let end = c.env.as_ref().map_or(0, Vec::len);
        let edit = insert_env(c, end, entry);
        edits.push(Edit::Env { at, edit });
    }
    // Skip the mount when the volume is mounted already, or when something else is mounted at
    // the token path (a second mount there is invalid; the pod brings its own token).
    let mounted = c.volume_mounts.iter().flatten().any(|m| {
        m.name == EKS_TOKEN_VOLUME || m.mount_path.trim_end_matches('/') == EKS_TOKEN_MOUNT_PATH
    });
    if !mounted {
        let mount = VolumeMount {
            name: EKS_TOKEN_VOLUME.to_owned(),
            mount_path: EKS_TOKEN_MOUNT_PATH.to_owned(),
            read_only: Some(true),
            ..Default::default()
        };
        let new_list = c.volume_mounts.is_none();
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount.clone());
        edits.push(Edit::VolumeMount {
            at,
            mount: Box::new(mount),
            new_list,
        });
        changed = true;
    }
    changed
}

/// Inject web identity into every container and init container not named in
/// `eks.amazonaws.com/skip-containers`, and add the projected token volume if absent
/// (appended: the position does not matter to either webhook, and appending never shifts the
/// pod's own volumes). Returns the names of the containers it changed.
pub fn inject(pod: &mut Pod, wi: &WebIdentity, edits: &mut Vec<Edit>) -> Vec<String> {
    let skip = skipped_containers(pod);
    let token_file = token_path(pod);
    let Some(spec) = pod.spec.as_mut() else {
        return vec![];
    };
    let mut changed = Vec::new();
    let init = spec.init_containers.iter_mut().flatten().enumerate();
    let init = init.map(|(index, c)| (At { init: true, index }, c));
    let regular = spec.containers.iter_mut().enumerate();
    let regular = regular.map(|(index, c)| (At { init: false, index }, c));
    for (at, c) in init.chain(regular) {
        if !skip.contains(&c.name) && inject_container(c, at, wi, &token_file, edits) {
            changed.push(c.name.clone());
        }
    }
    if !spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == EKS_TOKEN_VOLUME)
    {
        let volume = Volume {
            name: EKS_TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(wi.audience.clone()),
                        expiration_seconds: Some(wi.expiration_seconds),
                        path: EKS_TOKEN_FILE.to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let new_list = spec.volumes.is_none();
        spec.volumes
            .get_or_insert_with(Vec::new)
            .push(volume.clone());
        edits.push(Edit::Volume {
            volume: Box::new(volume),
            new_list,
        });
    }
    changed
}

/// The containers (init containers first) web identity goes to: all but those named in
/// `eks.amazonaws.com/skip-containers`.
pub fn carriers(pod: &Pod) -> Vec<String> {
    let skip = skipped_containers(pod);
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter(|c| !skip.contains(&c.name))
        .map(|c| c.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn wi() -> WebIdentity {
        WebIdentity {
            role_arn: "arn:aws:iam::111122223333:role/harbor".into(),
            audience: EKS_DEFAULT_AUDIENCE.into(),
            regional_sts: false,
            expiration_seconds: 86400,
            region: "eu-west-1".into(),
        }
    }

    fn pod(containers: Vec<Container>, annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn c(name: &str, env: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            env: (!env.is_empty()).then(|| env.iter().map(|(k, v)| literal(k, v)).collect()),
            ..Default::default()
        }
    }

    fn env(p: &Pod, i: usize) -> Vec<(&str, &str)> {
        p.spec.as_ref().unwrap().containers[i]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect()
    }

    #[test]
    fn injects_like_the_eks_webhook_and_is_idempotent() {
        let mut p = pod(vec![c("core", &[])], &[]);
        assert_eq!(inject(&mut p, &wi(), &mut vec![]), vec!["core".to_string()]);
        assert_eq!(
            env(&p, 0),
            vec![
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/harbor"),
                (
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                    "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
                ),
            ]
        );
        let spec = p.spec.as_ref().unwrap();
        let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (
                mount.name.as_str(),
                mount.mount_path.as_str(),
                mount.read_only
            ),
            (EKS_TOKEN_VOLUME, EKS_TOKEN_MOUNT_PATH, Some(true))
        );
        let vol = &spec.volumes.as_ref().unwrap()[0];
        let token = vol.projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                token.audience.as_deref(),
                token.expiration_seconds,
                token.path.as_str()
            ),
            (Some("sts.amazonaws.com"), Some(86400), "token")
        );
        let once = p.clone();
        assert!(inject(&mut p, &wi(), &mut vec![]).is_empty());
        assert_eq!(p, once);
    }

    #[test]
    fn never_overrides_what_the_pod_has() {
        let mut p = pod(
            vec![
                c("a", &[("AWS_ROLE_ARN", "arn:mine")]),
                c("b", &[("AWS_REGION", "us-east-1")]),
            ],
            &[],
        );
        inject(
            &mut p,
            &WebIdentity {
                regional_sts: true,
                ..wi()
            },
            &mut vec![],
        );
        assert_eq!(
            env(&p, 0),
            vec![
                ("AWS_ROLE_ARN", "arn:mine"),
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_REGION", "eu-west-1"),
            ],
            "one of the pair present: neither is added"
        );
        assert_eq!(env(&p, 1)[0], ("AWS_REGION", "us-east-1"));
        assert!(!env(&p, 1).iter().any(|(k, _)| *k == "AWS_DEFAULT_REGION"));
    }

    #[test]
    fn skip_containers_init_containers_and_windows() {
        let mut p = pod(
            vec![c("core", &[]), c("sidecar", &[])],
            &[(EKS_SKIP_CONTAINERS_ANNOTATION, "sidecar,other")],
        );
        p.spec.as_mut().unwrap().init_containers = Some(vec![c("init", &[])]);
        p.spec.as_mut().unwrap().node_selector =
            Some([("kubernetes.io/os".to_string(), "windows".to_string())].into());
        let changed = inject(&mut p, &wi(), &mut vec![]);
        assert_eq!(changed, vec!["init".to_string(), "core".to_string()]);
        assert!(env(&p, 1).is_empty());
        assert!(env(&p, 0).contains(&(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "C:\\var\\run\\secrets\\eks.amazonaws.com\\serviceaccount\\token"
        )));
    }

    #[test]
    fn a_mount_already_at_the_token_path_is_left_alone() {
        let mut own = c("core", &[]);
        own.volume_mounts = Some(vec![VolumeMount {
            name: "my-token".into(),
            mount_path: format!("{EKS_TOKEN_MOUNT_PATH}/"),
            read_only: Some(true),
            ..Default::default()
        }]);
        let mut p = pod(vec![own], &[]);
        inject(&mut p, &wi(), &mut vec![]);
        let mounts = p.spec.as_ref().unwrap().containers[0]
            .volume_mounts
            .as_ref()
            .unwrap();
        assert_eq!(
            mounts.len(),
            1,
            "no second mount at the same path: {mounts:?}"
        );
        assert!(env(&p, 0).contains(&("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/harbor")));
    }

    #[test]
    fn resolution_order_and_the_eks_floor() {
        let sa: BTreeMap<String, String> = [
            (EKS_AUDIENCE_ANNOTATION.to_string(), "custom".to_string()),
            (EKS_STS_REGIONAL_ANNOTATION.to_string(), "true".to_string()),
            (
                EKS_TOKEN_EXPIRATION_ANNOTATION.to_string(),
                "7200".to_string(),
            ),
        ]
        .into();
        let plain = pod(vec![], &[]);
        let r = WebIdentity::resolve(&plain, "arn", &sa, false, 86400, "eu-west-1");
        assert_eq!(
            (r.audience.as_str(), r.regional_sts, r.expiration_seconds),
            ("custom", true, 7200)
        );
        let annotated = pod(vec![], &[(EKS_TOKEN_EXPIRATION_ANNOTATION, "60")]);
        assert_eq!(
            WebIdentity::resolve(&annotated, "arn", &sa, false, 86400, "r").expiration_seconds,
            600
        );
        let annotated = pod(vec![], &[(EKS_TOKEN_EXPIRATION_ANNOTATION, "600")]);
        assert_eq!(
            WebIdentity::resolve(&annotated, "arn", &sa, false, 86400, "r").expiration_seconds,
            600
        );
        let annotated = pod(vec![], &[(EKS_TOKEN_EXPIRATION_ANNOTATION, "999999")]);
        assert_eq!(
            WebIdentity::resolve(&annotated, "arn", &sa, false, 86400, "r").expiration_seconds,
            999999,
            "no upper cap"
        );
        let sa_low: BTreeMap<String, String> =
            [(EKS_TOKEN_EXPIRATION_ANNOTATION.to_string(), "1".to_string())].into();
        assert_eq!(
            WebIdentity::resolve(&plain, "arn", &sa_low, false, 86400, "r").expiration_seconds,
            600
        );
        assert_eq!(
            WebIdentity::resolve(&plain, "arn", &BTreeMap::new(), false, 100, "r")
                .expiration_seconds,
            600
        );
        let junk = pod(vec![], &[(EKS_TOKEN_EXPIRATION_ANNOTATION, "soon")]);
        assert_eq!(
            WebIdentity::resolve(&junk, "arn", &sa, false, 86400, "r").expiration_seconds,
            7200
        );
        let none = WebIdentity::resolve(&plain, "arn", &BTreeMap::new(), false, 43200, "r");
        assert_eq!(
            (
                none.audience.as_str(),
                none.regional_sts,
                none.expiration_seconds
            ),
            ("sts.amazonaws.com", false, 43200)
        );
    }
}
