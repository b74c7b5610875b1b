use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, PodSpec, SecretEnvSource, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::mutate::env::is_blank;

const CAPABLE: &str = "8gears.container-registry.com/8gcr/harbor-core:v2.15.0";

fn cfg() -> MutateConfig {
    MutateConfig::new("eu-west-1")
}

fn mk_container(name: &str, env: Vec<EnvVar>, env_from_secret: Option<&str>) -> Container {
    Container {
        name: name.into(),
        image: Some(CAPABLE.into()),
        env: (!env.is_empty()).then_some(env),
        env_from: env_from_secret.map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s.into(),
                    optional: None,
                }),
                ..Default::default()
            }]
        }),
        ..Default::default()
    }
}

fn mk_pod(labels: &[(&str, &str)], containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("harbor".into()),
            generate_name: Some("harbor-core-abc-".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("default".into()),
            service_account: Some("default".into()),
            containers,
            ..Default::default()
        }),
        status: None,
    }
}

fn core_pod(containers: Vec<Container>) -> Pod {
    mk_pod(&[("app", "harbor"), ("component", "core")], containers)
}

fn lit(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

fn env_of<'a>(pod: &'a Pod, container: &str) -> &'a [EnvVar] {
    let spec = pod.spec.as_ref().unwrap();
    let c = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == container)
        .unwrap();
    c.env.as_deref().unwrap_or(&[])
}

fn value<'a>(pod: &'a Pod, container: &str, name: &str) -> Option<&'a str> {
    let found: Vec<_> = env_of(pod, container)
        .iter()
        .filter(|e| e.name == name)
        .collect();
    assert!(found.len() <= 1, "{name} appears {} times", found.len());
    found.first().map(|e| e.value.as_deref().unwrap_or(""))
}

#[test]
fn core_gets_iam_env_sa_sslmode_and_blank_password() {
    let pod = core_pod(vec![mk_container(
        "core",
        vec![lit("CORE_SECRET", "x")],
        Some("harbor-core"),
    )]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Core));
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_USE_IAM_AUTH"),
        Some("true")
    );
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_AWS_REGION"),
        Some("eu-west-1")
    );
    assert_eq!(
        value(&m.pod, "core", "HARBOR_ENABLE_COMMERCIAL_AWS_RDS_IAM_AUTH"),
        Some("true")
    );
    assert_eq!(value(&m.pod, "core", "POSTGRESQL_PASSWORD"), Some(""));
    // No ConfigMap facts and envFrom has none: "no source" -> require.
    assert_eq!(value(&m.pod, "core", "POSTGRESQL_SSLMODE"), Some("require"));
    let spec = m.pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("harbor-sa"));
    assert_eq!(spec.service_account.as_deref(), Some("harbor-sa"));
    assert_eq!(
        m.pod.metadata.annotations.as_ref().unwrap()[STATUS_ANNOTATION],
        "injected"
    );
    assert_eq!(
        env_of(&m.pod, "core")[0],
        lit("CORE_SECRET", "x"),
        "existing entries stay first"
    );
    assert_eq!(m.audit["component"], "core");
    assert_eq!(m.audit["service-account"], "harbor-sa");
}

#[test]
fn exporter_uses_its_own_names_and_blanks_both_passwords() {
    let pod = mk_pod(
        &[("app", "harbor"), ("component", "exporter")],
        vec![mk_container(
            "exporter",
            vec![secret("HARBOR_DATABASE_PASSWORD", "x", "k")],
            Some("harbor-exporter"),
        )],
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(
        value(&m.pod, "exporter", "HARBOR_DATABASE_USE_IAM_AUTH"),
        Some("true")
    );
    assert_eq!(
        value(&m.pod, "exporter", "HARBOR_DATABASE_AWS_REGION"),
        Some("eu-west-1")
    );
    assert_eq!(
        value(&m.pod, "exporter", "HARBOR_DATABASE_SSLMODE"),
        Some("require")
    );
    assert_eq!(
        value(&m.pod, "exporter", "HARBOR_DATABASE_PASSWORD"),
        Some("")
    );
    assert_eq!(value(&m.pod, "exporter", "POSTGRESQL_PASSWORD"), Some(""));
    assert_eq!(value(&m.pod, "exporter", "POSTGRESQL_USE_IAM_AUTH"), None);
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("blanked HARBOR_DATABASE_PASSWORD (Secret x key k)"))
    );
}

#[test]
fn jobservice_has_no_sslmode_and_blanks_only_with_env_from_secret() {
    let labels = [
        ("app.kubernetes.io/name", "harbor-next"),
        ("app.kubernetes.io/component", "jobservice"),
    ];
    let pod = mk_pod(
        &labels,
        vec![mk_container(
            "jobservice",
            vec![],
            Some("harbor-jobservice"),
        )],
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(
        value(&m.pod, "jobservice", "POSTGRESQL_USE_IAM_AUTH"),
        Some("true")
    );
    assert_eq!(value(&m.pod, "jobservice", "POSTGRESQL_SSLMODE"), None);
    assert_eq!(value(&m.pod, "jobservice", "POSTGRESQL_PASSWORD"), Some(""));

    let pod = mk_pod(&labels, vec![mk_container("jobservice", vec![], None)]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(value(&m.pod, "jobservice", "POSTGRESQL_PASSWORD"), None);
}

#[test]
fn init_containers_get_blanking_only() {
    let mut pod = core_pod(vec![mk_container("core", vec![], None)]);
    pod.spec.as_mut().unwrap().init_containers = Some(vec![mk_container(
        "init",
        vec![lit("POSTGRESQL_PASSWORD", "hunter2")],
        None,
    )]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(value(&m.pod, "init", "POSTGRESQL_PASSWORD"), Some(""));
    assert_eq!(value(&m.pod, "init", "POSTGRESQL_USE_IAM_AUTH"), None);
    assert!(m.warnings.iter().all(|w| !w.contains("hunter2")));
    assert!(
        m.warnings.iter().any(|w| {
            w.contains("container init: blanked POSTGRESQL_PASSWORD (a literal value)")
        })
    );
}

#[test]
fn user_values_kept_when_same_meaning_replaced_with_warning_otherwise() {
    let pod = core_pod(vec![mk_container(
        "core",
        vec![
            lit("POSTGRESQL_USE_IAM_AUTH", "True"),
            lit("POSTGRESQL_AWS_REGION", "us-east-1"),
            lit("POSTGRESQL_SSLMODE", "verify-full"),
        ],
        None,
    )]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_USE_IAM_AUTH"),
        Some("True")
    );
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_AWS_REGION"),
        Some("eu-west-1")
    );
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_SSLMODE"),
        Some("verify-full")
    );
    assert!(
        m.warnings.iter().any(|w| w
            == "container core: POSTGRESQL_AWS_REGION was \"us-east-1\"; set to \"eu-west-1\"")
    );
    assert_eq!(
        env_of(&m.pod, "core")[1].name,
        "POSTGRESQL_AWS_REGION",
        "edited in place"
    );
}

#[test]
fn region_annotation_overrides_and_is_validated() {
    let mut pod = core_pod(vec![mk_container("core", vec![], None)]);
    pod.metadata.annotations =
        Some([(REGION_ANNOTATION.to_string(), "ap-southeast-2".to_string())].into());
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_AWS_REGION"),
        Some("ap-southeast-2")
    );

    pod.metadata.annotations =
        Some([(REGION_ANNOTATION.to_string(), "EU West".to_string())].into());
    let err = mutate(&pod, &cfg(), &Facts::default()).unwrap_err();
    assert!(matches!(err, MutateError::InvalidRegion { .. }));
    assert!(
        err.to_string().contains("harbor/harbor-core-abc-*"),
        "{err}"
    );
}

#[test]
fn region_validation() {
    for ok in [
        "eu-west-1",
        "us-gov-west-1",
        "ap-southeast-2",
        "il-central-1",
        "cn-north-1",
    ] {
        assert!(is_valid_region(ok), "{ok}");
    }
    for bad in [
        "",
        "eu",
        "eu-west",
        "EU-WEST-1",
        "eu_west_1",
        "eu-west-1a",
        "-eu-west-1",
        "1-west-1",
    ] {
        assert!(!is_valid_region(bad), "{bad}");
    }
}

#[test]
fn url_with_password_is_denied_without_echoing_it() {
    let pod = core_pod(vec![mk_container(
        "core",
        vec![lit(
            "POSTGRESQL_URL",
            "postgres://harbor:hunter2@db/registry",
        )],
        None,
    )]);
    let err = mutate(&pod, &cfg(), &Facts::default()).unwrap_err();
    assert_eq!(
        err,
        MutateError::PasswordInUrl {
            pod: "harbor/harbor-core-abc-*".into(),
            container: "core".into(),
            from: "a literal value".into(),
        }
    );
    assert!(!err.to_string().contains("hunter2"));

    let pod = core_pod(vec![mk_container(
        "core",
        vec![secret("POSTGRESQL_URL", "db", "url")],
        None,
    )]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("POSTGRESQL_URL from Secret db key url"))
    );

    let pod = core_pod(vec![mk_container(
        "core",
        vec![lit("POSTGRESQL_URL", "postgres://harbor@db/registry")],
        None,
    )]);
    assert!(mutate(&pod, &cfg(), &Facts::default()).is_ok());
}

#[test]
fn images_warn_or_skip_when_strict() {
    let mut c = mk_container("core", vec![], Some("harbor-core"));
    c.image = Some("goharbor/harbor-core:v2.12.4".into());
    let pod = core_pod(vec![c]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Core));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("goharbor/harbor-core:v2.12.4 may lack RDS IAM auth"))
    );

    let strict = MutateConfig {
        strict_images: true,
        ..cfg()
    };
    let m = mutate(&pod, &strict, &Facts::default()).unwrap();
    assert_eq!(
        m.outcome,
        Outcome::Skipped(Skip::ImageNotIamCapable(Component::Core))
    );
    assert_eq!(m.pod, pod);

    let capable = core_pod(vec![mk_container("core", vec![], None)]);
    let m = mutate(&capable, &strict, &irsa_facts()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Core));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn per_component_service_account() {
    let mut config = cfg();
    config
        .component_service_accounts
        .insert(Component::Core, "harbor-core-irsa".into());
    let pod = core_pod(vec![mk_container("core", vec![], None)]);
    let m = mutate(&pod, &config, &Facts::default()).unwrap();
    assert_eq!(
        m.pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("harbor-core-irsa")
    );
}

#[test]
fn skipped_pods_are_returned_unchanged() {
    let pod = mk_pod(
        &[("app", "nginx")],
        vec![mk_container(
            "c",
            vec![lit("POSTGRESQL_PASSWORD", "x")],
            None,
        )],
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!((m.outcome, m.pod), (Outcome::Skipped(Skip::NotHarbor), pod));

    let pod = mk_pod(
        &[("app", "harbor"), ("component", "portal")],
        vec![mk_container("portal", vec![], None)],
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(
        m.outcome,
        Outcome::Skipped(Skip::NoDatabase(Some("portal".into())))
    );
    assert_eq!(m.pod, pod);

    let mut pod = core_pod(vec![mk_container("core", vec![], Some("s"))]);
    pod.metadata.annotations = Some(
        [(
            crate::consts::INJECT_ANNOTATION.to_string(),
            "disabled".to_string(),
        )]
        .into(),
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(m.outcome, Outcome::Skipped(Skip::OptedOut(Component::Core)));
    assert_eq!(m.pod, pod);
}

#[test]
fn status_annotation_is_not_trusted() {
    let mut pod = core_pod(vec![mk_container(
        "core",
        vec![lit("POSTGRESQL_PASSWORD", "pw")],
        None,
    )]);
    pod.metadata.annotations =
        Some([(STATUS_ANNOTATION.to_string(), STATUS_INJECTED.to_string())].into());
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert!(
        env_of(&m.pod, "core")
            .iter()
            .filter(|e| e.name == "POSTGRESQL_PASSWORD")
            .all(is_blank)
    );
}

#[test]
fn idempotent_also_after_api_server_drops_empty_values() {
    let pod = core_pod(vec![mk_container(
        "core",
        vec![secret("POSTGRESQL_PASSWORD", "db", "pw")],
        Some("s"),
    )]);
    let once = mutate(&pod, &cfg(), &Facts::default()).unwrap().pod;
    let twice = mutate(&once, &cfg(), &Facts::default()).unwrap().pod;
    assert_eq!(once, twice);
    let mut normalised = once.clone();
    for c in &mut normalised.spec.as_mut().unwrap().containers {
        for e in c.env.iter_mut().flatten() {
            if e.value.as_deref() == Some("") {
                e.value = None;
            }
        }
    }
    let again = mutate(&normalised, &cfg(), &Facts::default()).unwrap().pod;
    assert_eq!(again, normalised);
}

#[test]
fn warnings_show_only_known_words() {
    let pod = core_pod(vec![mk_container(
        "core",
        vec![
            lit("POSTGRESQL_SSLMODE", "Tr0ub4dor&3"),
            lit("POSTGRESQL_USE_IAM_AUTH", "false"),
            lit("POSTGRESQL_AWS_REGION", "x9"),
        ],
        None,
    )]);
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    let all = m.warnings.join("\n");
    assert!(!all.contains("Tr0ub4dor") && !all.contains("x9"), "{all}");
    assert!(
        all.contains("POSTGRESQL_SSLMODE was an unrecognised value"),
        "{all}"
    );
    assert!(
        all.contains("POSTGRESQL_USE_IAM_AUTH was \"false\""),
        "{all}"
    );
}

#[test]
fn url_from_a_config_map_is_refused_when_known_and_warned_about_when_not() {
    use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapEnvSource};
    let mut c = mk_container("core", vec![], None);
    c.env_from = Some(vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: "harbor-core".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let pod = core_pod(vec![c]);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("harbor-core".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "POSTGRESQL_URL".to_string(),
                "postgres://u:pw@h/d".to_string(),
            )]
            .into(),
        ),
        ..Default::default()
    };
    // Shown by the facts, the password is known: refused, naming the ConfigMap, not the value.
    let err = mutate(&pod, &cfg(), &Facts::with_config_maps([cm])).unwrap_err();
    assert!(
        matches!(&err, MutateError::PasswordInUrl { from, .. } if from == "ConfigMap harbor-core"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("pw@"));
    // Not shown: the ConfigMap may set it, a warning says so.
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("POSTGRESQL_URL from ConfigMap harbor-core: make sure")),
        "{:?}",
        m.warnings
    );
}

// --- Identity (cluster-aware rules).

const ROLE: &str = "arn:aws:iam::111122223333:role/harbor-rds";

fn sa(name: &str, annotations: &[(&str, &str)]) -> k8s_openapi::api::core::v1::ServiceAccount {
    k8s_openapi::api::core::v1::ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("harbor".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn irsa_facts() -> Facts {
    let mut f = Facts::default();
    f.add_service_account(sa("harbor-sa", &[(consts::EKS_ROLE_ARN_ANNOTATION, ROLE)]));
    f.add_service_account(sa("default", &[]));
    f.set_service_accounts_complete(true);
    f
}

fn names(pod: &Pod, container: &str) -> Vec<String> {
    env_of(pod, container)
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn irsa_injects_web_identity_for_the_role() {
    let pod = core_pod(vec![mk_container("core", vec![], Some("harbor-core"))]);
    let m = mutate(&pod, &cfg(), &irsa_facts()).unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(value(&m.pod, "core", "AWS_ROLE_ARN"), Some(ROLE));
    assert_eq!(value(&m.pod, "core", "AWS_REGION"), Some("eu-west-1"));
    assert_eq!(
        value(&m.pod, "core", "AWS_DEFAULT_REGION"),
        Some("eu-west-1")
    );
    assert_eq!(
        value(&m.pod, "core", "AWS_WEB_IDENTITY_TOKEN_FILE"),
        Some("/var/run/secrets/eks.amazonaws.com/serviceaccount/token")
    );
    let spec = m.pod.spec.as_ref().unwrap();
    assert!(
        spec.volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "aws-iam-token")
    );
    assert_eq!(m.audit["web-identity"], "core");
    // Idempotent, and the EKS webhook applied afterwards would find everything in place.
    let again = mutate(&m.pod, &cfg(), &irsa_facts()).unwrap();
    assert_eq!(again.pod, m.pod);
    assert_eq!(again.audit, m.audit, "the same audit on reinvocation");
}

#[test]
fn missing_service_account_or_role_is_denied_with_the_fix() {
    let pod = core_pod(vec![mk_container("core", vec![], None)]);
    let mut no_sa = Facts::default();
    no_sa.set_service_accounts_complete(true);
    let err = mutate(&pod, &cfg(), &no_sa).unwrap_err();
    assert!(matches!(err, MutateError::MissingServiceAccount { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("kubectl -n harbor create serviceaccount harbor-sa"),
        "{msg}"
    );

    let mut no_role = Facts::default();
    no_role.add_service_account(sa("harbor-sa", &[]));
    let err = mutate(&pod, &cfg(), &no_role).unwrap_err();
    assert!(matches!(err, MutateError::MissingRole { .. }));
    assert!(
        err.to_string()
            .contains("annotate serviceaccount harbor-sa eks.amazonaws.com/role-arn=")
    );

    let warn = MutateConfig {
        on_missing_role: OnMissingRole::Warn,
        ..cfg()
    };
    let m = mutate(&pod, &warn, &no_role).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("has no eks.amazonaws.com/role-arn")),
        "{:?}",
        m.warnings
    );
    assert_eq!(
        value(&m.pod, "core", "AWS_ROLE_ARN"),
        None,
        "no role, no injection"
    );
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_USE_IAM_AUTH"),
        Some("true")
    );
}

#[test]
fn pod_identity_mode_checks_and_injects_nothing() {
    let pod = core_pod(vec![mk_container("core", vec![], None)]);
    let config = MutateConfig {
        identity_mode: IdentityMode::PodIdentity,
        ..cfg()
    };
    let m = mutate(&pod, &config, &Facts::default()).unwrap();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(value(&m.pod, "core", "AWS_ROLE_ARN"), None);
    assert_eq!(
        m.pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("harbor-sa")
    );
}

#[test]
fn own_service_account_with_a_role_is_kept_unless_forced() {
    let mut pod = core_pod(vec![mk_container("core", vec![], None)]);
    pod.spec.as_mut().unwrap().service_account_name = Some("harbor-core".into());
    let mut facts = irsa_facts();
    facts.add_service_account(sa(
        "harbor-core",
        &[(consts::EKS_ROLE_ARN_ANNOTATION, "arn:aws:iam::1:role/core")],
    ));
    let m = mutate(&pod, &cfg(), &facts).unwrap();
    assert_eq!(
        m.pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("harbor-core")
    );
    assert_eq!(
        value(&m.pod, "core", "AWS_ROLE_ARN"),
        Some("arn:aws:iam::1:role/core")
    );
    assert_eq!(
        m.audit["service-account"],
        "harbor-core (kept: it has a role)"
    );

    let forced = MutateConfig {
        force_service_account: true,
        ..cfg()
    };
    let m = mutate(&pod, &forced, &facts).unwrap();
    assert_eq!(
        m.pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("harbor-sa")
    );
    assert_eq!(value(&m.pod, "core", "AWS_ROLE_ARN"), Some(ROLE));
    assert_eq!(m.audit["service-account"], "harbor-sa");
}

#[test]
fn a_role_injected_for_the_previous_account_is_repointed() {
    // The EKS webhook ran first, for the pod's original account.
    let mut pod = core_pod(vec![mk_container(
        "core",
        vec![lit("AWS_ROLE_ARN", "arn:aws:iam::1:role/core")],
        None,
    )]);
    pod.spec.as_mut().unwrap().service_account_name = Some("harbor-core".into());
    let mut facts = irsa_facts();
    facts.add_service_account(sa(
        "harbor-core",
        &[(consts::EKS_ROLE_ARN_ANNOTATION, "arn:aws:iam::1:role/core")],
    ));
    let forced = MutateConfig {
        force_service_account: true,
        ..cfg()
    };
    let m = mutate(&pod, &forced, &facts).unwrap();
    assert_eq!(value(&m.pod, "core", "AWS_ROLE_ARN"), Some(ROLE));
    // A value of the pod's own making stays.
    let mut own = core_pod(vec![mk_container(
        "core",
        vec![lit("AWS_ROLE_ARN", "arn:aws:iam::9:role/mine")],
        None,
    )]);
    own.spec.as_mut().unwrap().service_account_name = Some("harbor-core".into());
    let m = mutate(&own, &forced, &facts).unwrap();
    assert_eq!(
        value(&m.pod, "core", "AWS_ROLE_ARN"),
        Some("arn:aws:iam::9:role/mine")
    );
}

#[test]
fn skip_label_means_no_web_identity() {
    let mut pod = core_pod(vec![mk_container("core", vec![], None)]);
    pod.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(consts::EKS_SKIP_POD_LABEL.into(), "true".into());
    let m = mutate(&pod, &cfg(), &irsa_facts()).unwrap();
    assert!(!names(&m.pod, "core").contains(&"AWS_ROLE_ARN".to_string()));
    assert_eq!(
        value(&m.pod, "core", "POSTGRESQL_USE_IAM_AUTH"),
        Some("true")
    );
}

#[test]
fn registry_s3_keys_only_with_the_opt_in() {
    let registry = || {
        mk_pod(
            &[("app", "harbor"), ("component", "registry")],
            vec![
                mk_container("registry", vec![], Some("harbor-registry")),
                mk_container(
                    "registryctl",
                    vec![secret("REGISTRY_STORAGE_S3_SECRETKEY", "s3", "secret")],
                    Some("harbor-registry"),
                ),
            ],
        )
    };
    let m = mutate(&registry(), &cfg(), &irsa_facts()).unwrap();
    assert_eq!(
        m.outcome,
        Outcome::Skipped(Skip::NoDatabase(Some("registry".into())))
    );
    let opted = MutateConfig {
        registry_s3_irsa: true,
        ..cfg()
    };
    let m = mutate(&registry(), &opted, &irsa_facts()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Registry));
    for c in ["registry", "registryctl"] {
        assert_eq!(value(&m.pod, c, "REGISTRY_STORAGE_S3_ACCESSKEY"), Some(""));
        assert_eq!(value(&m.pod, c, "REGISTRY_STORAGE_S3_SECRETKEY"), Some(""));
        assert_eq!(value(&m.pod, c, "AWS_ROLE_ARN"), Some(ROLE));
        assert_eq!(value(&m.pod, c, "POSTGRESQL_USE_IAM_AUTH"), None);
        assert_eq!(value(&m.pod, c, "POSTGRESQL_PASSWORD"), None);
    }
    assert_eq!(
        m.pod.spec.as_ref().unwrap().service_account_name.as_deref(),
        Some("harbor-sa")
    );
}

#[test]
fn validate_refuses_static_secrets_even_when_opted_out() {
    let mut pod = core_pod(vec![mk_container("core", vec![], Some("harbor-core"))]);
    pod.metadata.annotations = Some(
        [(
            consts::INJECT_ANNOTATION.to_string(),
            "disabled".to_string(),
        )]
        .into(),
    );
    let err = validate(&pod, &cfg()).unwrap_err();
    assert!(
        err.to_string()
            .contains("container core may get POSTGRESQL_PASSWORD from Secret harbor-core"),
        "{err}"
    );
    assert!(err.opted_out);
    assert!(
        err.to_string()
            .contains("opts out with annotation harbor-iam-webhook/inject: disabled"),
        "{err}"
    );
    let mutated = mutate(
        &core_pod(vec![mk_container("core", vec![], Some("harbor-core"))]),
        &cfg(),
        &irsa_facts(),
    )
    .unwrap();
    assert_eq!(validate(&mutated.pod, &cfg()), Ok(()));

    let literal = core_pod(vec![mk_container(
        "core",
        vec![lit("POSTGRESQL_PASSWORD", "hunter2")],
        None,
    )]);
    let err = validate(&literal, &cfg()).unwrap_err().to_string();
    assert!(
        err.contains("gets POSTGRESQL_PASSWORD from a literal value") && !err.contains("hunter2"),
        "{err}"
    );
    let url = core_pod(vec![mk_container(
        "core",
        vec![lit("POSTGRESQL_URL", "postgres://u:p@h/d")],
        None,
    )]);
    assert!(
        validate(&url, &cfg())
            .unwrap_err()
            .to_string()
            .contains("POSTGRESQL_URL")
    );
    let web = mk_pod(
        &[("app", "web")],
        vec![mk_container(
            "c",
            vec![lit("POSTGRESQL_PASSWORD", "x")],
            None,
        )],
    );
    assert_eq!(validate(&web, &cfg()), Ok(()));
}

// --- The environment the kubelet builds (issue: decide from the effective environment).

fn from_config_map(name: &str) -> EnvFromSource {
    EnvFromSource {
        config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
            name: name.into(),
            optional: None,
        }),
        ..Default::default()
    }
}

#[test]
fn an_empty_component_label_is_no_label() {
    let pod = mk_pod(
        &[
            ("app", "harbor"),
            ("component", "core"),
            ("app.kubernetes.io/component", ""),
        ],
        vec![mk_container("core", vec![], Some("harbor-core"))],
    );
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Core));
}

#[test]
fn strict_images_judge_only_the_charts_containers() {
    let mut config = cfg();
    config.strict_images = true;
    let mut sidecar = mk_container("istio-proxy", vec![], None);
    sidecar.image = Some("docker.io/istio/proxyv2:1.24.0".into());
    let pod = core_pod(vec![
        mk_container("core", vec![], Some("harbor-core")),
        sidecar,
    ]);
    let m = mutate(&pod, &config, &Facts::default()).unwrap();
    assert_eq!(m.outcome, Outcome::Applied(Component::Core));
    assert!(
        m.warnings.iter().all(|w| !w.contains("istio")),
        "{:?}",
        m.warnings
    );
    // The chart's own container still decides.
    let mut core = mk_container("core", vec![], Some("harbor-core"));
    core.image = Some("goharbor/harbor-core:v2.12.4".into());
    let m = mutate(&core_pod(vec![core]), &config, &Facts::default()).unwrap();
    assert_eq!(
        m.outcome,
        Outcome::Skipped(Skip::ImageNotIamCapable(Component::Core))
    );
}

#[test]
fn a_password_from_a_config_map_gets_the_explicit_blank() {
    let mut c = mk_container("core", vec![], None);
    c.env_from = Some(vec![from_config_map("harbor-core")]);
    let m = mutate(&core_pod(vec![c]), &cfg(), &Facts::default()).unwrap();
    let env = m.pod.spec.unwrap().containers[0].env.clone().unwrap();
    for name in [
        consts::POSTGRESQL_PASSWORD,
        consts::HARBOR_DATABASE_PASSWORD,
    ] {
        assert!(
            env.iter().any(|e| e.name == name && is_blank(e)),
            "{name}: {env:?}"
        );
    }
}

#[test]
fn a_blank_goes_before_the_url_that_copies_the_password() {
    // The password arrives through envFrom; the URL, declared first, copies it.
    let c = mk_container(
        "core",
        vec![lit(
            "POSTGRESQL_URL",
            "postgres://harbor:$(POSTGRESQL_PASSWORD)@db/registry?sslmode=require",
        )],
        Some("harbor-core"),
    );
    let m = mutate(&core_pod(vec![c]), &cfg(), &Facts::default()).unwrap();
    let env = m.pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert_eq!(env[0].name, consts::POSTGRESQL_PASSWORD);
    assert!(is_blank(&env[0]));
    assert_eq!(
        env[1].name,
        consts::POSTGRESQL_URL,
        "the URL itself is untouched"
    );
    assert_eq!(validate(&m.pod, &cfg()), Ok(()));
    // Idempotent: the blank already comes first.
    let again = mutate(&m.pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(again.pod, m.pod);
}

#[test]
fn harbor_next_db_tls_dsn_is_admitted_once_its_password_is_blank() {
    let c = mk_container(
        "core",
        vec![
            secret(
                "POSTGRESQL_PASSWORD",
                "harbor-next-database",
                "POSTGRESQL_PASSWORD",
            ),
            lit(
                "POSTGRESQL_URL",
                "host=db user=harbor password='$(POSTGRESQL_PASSWORD)' dbname=registry sslmode=verify-full",
            ),
        ],
        None,
    );
    let pod = core_pod(vec![c]);
    // Unmutated, the DSN copies a Secret's password: /validate refuses it.
    assert!(validate(&pod, &cfg()).is_err());
    let m = mutate(&pod, &cfg(), &Facts::default()).unwrap();
    assert_eq!(validate(&m.pod, &cfg()), Ok(()));
    // A literal password in the DSN is refused.
    let c = mk_container(
        "core",
        vec![lit(
            "POSTGRESQL_URL",
            "host=db password='hunter2' sslmode=verify-full",
        )],
        None,
    );
    let err = mutate(&core_pod(vec![c]), &cfg(), &Facts::default()).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn sslmode_through_a_reference_is_kept() {
    let cm = k8s_openapi::api::core::v1::ConfigMap {
        metadata: ObjectMeta {
            name: Some("db".into()),
            namespace: Some("harbor".into()),
            ..Default::default()
        },
        data: Some([("DB_SSLMODE".to_string(), "verify-full".to_string())].into()),
        ..Default::default()
    };
    let mut c = mk_container(
        "core",
        vec![lit("POSTGRESQL_SSLMODE", "$(DB_SSLMODE)")],
        None,
    );
    c.env_from = Some(vec![from_config_map("db")]);
    let m = mutate(&core_pod(vec![c]), &cfg(), &Facts::with_config_maps([cm])).unwrap();
    assert_eq!(
        m.audit.get("sslmode").map(String::as_str),
        Some("core=verify-full")
    );
    let env = &m.pod.spec.unwrap().containers[0].env.clone().unwrap();
    let entries: Vec<_> = env
        .iter()
        .filter(|e| e.name == "POSTGRESQL_SSLMODE")
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].value.as_deref(), Some("$(DB_SSLMODE)"));
}

// --- /validate: the closed list of guarantees (validate.rs), and ephemeral containers.

fn violations(pod: &Pod) -> String {
    match validate(pod, &cfg()) {
        Ok(()) => String::new(),
        Err(v) => {
            assert!(!v.opted_out);
            v.problems
        }
    }
}

#[test]
fn validate_lists_each_guarantee() {
    let one = |env: Vec<EnvVar>, secret: Option<&str>| {
        violations(&core_pod(vec![mk_container("core", env, secret)]))
    };
    let base = || {
        vec![
            lit("POSTGRESQL_SSLMODE", "require"),
            lit("PGPASSWORD", ""),
            lit("POSTGRESQL_PASSWORD", ""),
            lit("HARBOR_DATABASE_PASSWORD", ""),
        ]
    };
    assert_eq!(one(base(), Some("s")), "", "the mutated shape passes");
    // 1: PGPASSWORD is a static password like the others.
    let mut env = base();
    env[1] = lit("PGPASSWORD", "x");
    assert_eq!(
        one(env, None),
        "container core gets PGPASSWORD from a literal value"
    );
    // 2: an overridden entry still writes it into the pod.
    let mut env = base();
    env.insert(0, secret("POSTGRESQL_PASSWORD", "db", "pw"));
    assert!(one(env, None).contains("sets POSTGRESQL_PASSWORD in an entry a later one overrides"));
    // 3: copied before it is blank.
    let mut env = base();
    env.insert(0, lit("POSTGRESQL_PASSWORD", "x"));
    env.insert(1, lit("COPY", "$(POSTGRESQL_PASSWORD)"));
    assert!(one(env, None).contains("sets POSTGRESQL_PASSWORD in an entry"));
    // 4: envFrom with no explicit blank, even where the prefix can't produce the name.
    let mut c = mk_container("core", base()[..3].to_vec(), None);
    c.env_from = Some(vec![EnvFromSource {
        prefix: Some("OTHER_".into()),
        ..from_config_map("cm")
    }]);
    assert_eq!(
        violations(&core_pod(vec![c])),
        "container core has envFrom but no explicit empty HARBOR_DATABASE_PASSWORD first"
    );
    // 5: a password in the connection string.
    let mut env = base();
    env.push(lit("POSTGRESQL_URL", "host=db password=x sslmode=require"));
    assert_eq!(
        one(env, None),
        "container core gets a POSTGRESQL_URL with a password (from a literal value)"
    );
    // 6: a weak or missing sslmode variable.
    let mut env = base();
    env[0] = lit("POSTGRESQL_SSLMODE", "prefer");
    assert_eq!(
        one(env, None),
        "container core has a weak POSTGRESQL_SSLMODE"
    );
    assert_eq!(
        one(base()[1..].to_vec(), None),
        "container core sets no POSTGRESQL_SSLMODE"
    );
    // 7: the connection string's own sslmode, where the pod's text decides it.
    let mut env = base();
    env.push(lit("POSTGRESQL_URL", "postgres://db/registry"));
    assert_eq!(
        one(env, None),
        "container core has a POSTGRESQL_URL with a weak sslmode"
    );
    let mut env = base();
    env.push(lit("PGSSLMODE", "verify-full"));
    env.push(lit("POSTGRESQL_URL", "postgres://db/registry"));
    assert_eq!(
        one(env, None),
        "",
        "PGSSLMODE fills what the string leaves unset"
    );
}

#[test]
fn validate_admits_config_skips_with_a_warning() {
    let mut c = mk_container("core", vec![], Some("harbor-core"));
    c.image = Some("goharbor/harbor-core:v2.12.4".into());
    let pod = core_pod(vec![c]);
    assert!(validate(&pod, &cfg()).is_err());
    let strict = MutateConfig {
        strict_images: true,
        ..cfg()
    };
    let admitted = judge(&pod, &strict, &Facts::default()).unwrap();
    assert!(admitted.warnings[0].contains("--strict-images"));
    let m = mutate(&pod, &strict, &Facts::default()).unwrap();
    assert!(judge(&m.pod, &strict, &Facts::default()).is_ok());
    // The registry without the S3 opt-in is no target.
    let registry = mk_pod(
        &[("app", "harbor"), ("component", "registry")],
        vec![mk_container(
            "registry",
            vec![lit("REGISTRY_STORAGE_S3_SECRETKEY", "x")],
            None,
        )],
    );
    assert_eq!(validate(&registry, &cfg()), Ok(()));
    let s3 = MutateConfig {
        registry_s3_irsa: true,
        ..cfg()
    };
    assert!(validate(&registry, &s3).is_err());
}

#[test]
fn ephemeral_containers_new_in_the_update_are_judged() {
    use k8s_openapi::api::core::v1::EphemeralContainer;
    let debug = |name: &str, env: Vec<EnvVar>, secret: Option<&str>| EphemeralContainer {
        name: name.into(),
        image: Some("busybox".into()),
        env: (!env.is_empty()).then_some(env),
        env_from: secret.map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s.into(),
                    optional: None,
                }),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let old = mutate(
        &core_pod(vec![mk_container("core", vec![], Some("harbor-core"))]),
        &cfg(),
        &irsa_facts(),
    )
    .unwrap()
    .pod;
    let with = |eph: Vec<EphemeralContainer>| {
        let mut p = old.clone();
        p.spec.as_mut().unwrap().ephemeral_containers = Some(eph);
        p
    };
    let facts = Facts::default();
    // What `kubectl debug` sends by default: no env. Admitted.
    let plain = with(vec![debug("debugger-abc", vec![], None)]);
    assert!(judge_ephemeral(&old, &plain, &cfg(), &facts).is_ok());
    // The core Secret through envFrom: refused, naming the container.
    let leaking = with(vec![debug("debugger-xyz", vec![], Some("harbor-core"))]);
    let err = judge_ephemeral(&old, &leaking, &cfg(), &facts).unwrap_err();
    assert!(
        err.problems.starts_with(
            "ephemeral container debugger-xyz may get POSTGRESQL_PASSWORD from Secret harbor-core"
        ),
        "{err}"
    );
    // A literal password, or one inside the connection string.
    for env in [
        vec![lit("POSTGRESQL_PASSWORD", "hunter2")],
        vec![lit("POSTGRESQL_URL", "postgres://u:hunter2@db/x")],
        vec![secret("PGPASSWORD", "db", "pw")],
    ] {
        let p = with(vec![debug("d", env, None)]);
        let err = judge_ephemeral(&old, &p, &cfg(), &facts)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
    // One already in the old pod is not new: not judged again.
    let before = with(vec![debug("debugger-xyz", vec![], Some("harbor-core"))]);
    let more = {
        let mut p = before.clone();
        p.spec
            .as_mut()
            .unwrap()
            .ephemeral_containers
            .as_mut()
            .unwrap()
            .push(debug("second", vec![], None));
        p
    };
    assert!(judge_ephemeral(&before, &more, &cfg(), &facts).is_ok());
    // Not a Harbor DB pod: not judged.
    let mut web = leaking.clone();
    web.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    assert!(judge_ephemeral(&old, &web, &cfg(), &facts).is_ok());
}

// --- Credentials that silently beat IRSA (warnings, and reported by `audit`).

#[test]
fn credentials_that_beat_irsa_are_warned_about_once_per_kind() {
    let keys = || {
        vec![
            lit("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            secret("AWS_SECRET_ACCESS_KEY", "aws", "secret"),
        ]
    };
    let mut init = mk_container("init", keys(), None);
    init.image = None;
    let mut pod = core_pod(vec![
        mk_container("core", keys(), None),
        mk_container(
            "core-sidecar",
            vec![lit("AWS_ROLE_ARN", "arn:aws:iam::1:role/other")],
            None,
        ),
    ]);
    pod.spec.as_mut().unwrap().init_containers = Some(vec![init]);
    let m = mutate(&pod, &cfg(), &irsa_facts()).unwrap();
    let text = m.warnings.join("\n");
    assert!(
        m.warnings.contains(
            &"containers init, core: static AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY win over IRSA"
                .to_string()
        ),
        "{text}"
    );
    assert!(
        text.contains("container core-sidecar: AWS_ROLE_ARN is not the ServiceAccount's role"),
        "{text}"
    );
    assert!(!text.contains("AKIAEXAMPLE"));
    // An envFrom Secret alone is not a finding; a blank is not one either.
    let quiet = core_pod(vec![mk_container(
        "core",
        vec![lit("AWS_ACCESS_KEY_ID", "")],
        Some("harbor-core"),
    )]);
    let m = mutate(&quiet, &cfg(), &irsa_facts()).unwrap();
    assert!(
        !m.warnings.iter().any(|w| w.contains("AWS")),
        "{:?}",
        m.warnings
    );
    // Pod Identity: IRSA env left in the pod wins over it.
    let pi = MutateConfig {
        identity_mode: IdentityMode::PodIdentity,
        ..cfg()
    };
    let left = core_pod(vec![mk_container(
        "core",
        vec![lit("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")],
        None,
    )]);
    let m = mutate(&left, &pi, &Facts::default()).unwrap();
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("wins over Pod Identity")),
        "{:?}",
        m.warnings
    );
    // `audit` reports them on a pod as it runs.
    let finding = crate::audit::audit_pod(&m.pod, &pi).expect("a finding");
    assert!(
        finding
            .problems
            .iter()
            .any(|p| p.starts_with("credentials: ") && p.contains("wins over Pod Identity")),
        "{:?}",
        finding.problems
    );
}

#[test]
fn warnings_are_short_clean_and_aggregated() {
    let mut c1 = mk_container("core", vec![lit("POSTGRESQL_PASSWORD", "x")], None);
    let mut c2 = mk_container("core-2", vec![lit("POSTGRESQL_PASSWORD", "x")], None);
    let long = format!("registry.example.com/{}/harbor-core:v1\n", "a".repeat(150));
    c1.image = Some(long.clone());
    c2.image = Some(long);
    let m = mutate(&core_pod(vec![c1, c2]), &cfg(), &irsa_facts()).unwrap();
    assert!(
        m.warnings.contains(
            &"containers core, core-2: blanked POSTGRESQL_PASSWORD (a literal value)".to_string()
        ),
        "{:?}",
        m.warnings
    );
    for w in &m.warnings {
        assert!(w.chars().count() <= MAX_WARNING_CHARS, "{w}");
        assert!(!w.chars().any(char::is_control), "{w:?}");
    }
    assert!(m.warnings.iter().any(|w| w.ends_with('…')));
}

#[test]
fn tidy_warning_counts_characters_not_bytes() {
    let wide = "é".repeat(MAX_WARNING_CHARS);
    assert_eq!(
        tidy_warning(wide.clone()),
        wide,
        "99 characters, 198 bytes: kept whole"
    );
    let over = "é".repeat(MAX_WARNING_CHARS + 1);
    let cut = tidy_warning(over);
    assert_eq!(cut.chars().count(), MAX_WARNING_CHARS);
    assert!(cut.ends_with("é…"), "{cut}");
    assert_eq!(tidy_warning("a\tb\u{7}".into()), "a b ");
}
