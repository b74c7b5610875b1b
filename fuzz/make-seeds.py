#!/usr/bin/env python3
"""Write the `review` target's seed corpus: each pod of tests/fixtures/pods as the
AdmissionReview a kube-apiserver would send for its CREATE (compact JSON), plus a few
hand-made reviews (literal passwords, a URL with a password, an UPDATE, a bad object).

Usage: fuzz/make-seeds.py [OUT_DIR]   (default fuzz/seeds/review). Needs PyYAML.
"""

import json
import pathlib
import sys

import yaml

FUZZ = pathlib.Path(__file__).resolve().parent
PODS = FUZZ.parent / "tests" / "fixtures" / "pods"


def review(pod, operation="CREATE", uid="705ab4f5-6393-11e8-b7cc-42010a800002"):
    ns = (pod.get("metadata") or {}).get("namespace", "harbor") if isinstance(pod, dict) else "harbor"
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": ns,
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def small_core(env, env_from=None):
    c = {"name": "core", "image": "goharbor/harbor-core:v2.12.4", "env": env}
    if env_from:
        c["envFrom"] = env_from
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "harbor-core-", "labels": {"app": "harbor", "component": "core"}},
        "spec": {"containers": [c]},
    }


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else FUZZ / "seeds" / "review"
    out.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for path in sorted(PODS.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(docs) == 1, path
        seeds[path.stem] = review(docs[0])
    seeds["literal-password"] = review(
        small_core(
            [
                {"name": "POSTGRESQL_PASSWORD", "value": "hunter2"},
                {"name": "POSTGRESQL_SSLMODE", "value": "disable"},
            ]
        )
    )
    seeds["url-with-password"] = review(
        small_core([{"name": "POSTGRESQL_URL", "value": "postgres://harbor:hunter2@db/registry"}])
    )
    seeds["envfrom-configmaps"] = review(
        small_core(
            [{"name": "POSTGRESQL_SSLMODE", "valueFrom": {"configMapKeyRef": {"name": "cm-strong", "key": "SSLMODE"}}}],
            [{"configMapRef": {"name": "harbor-core"}}, {"secretRef": {"name": "harbor-core"}, "prefix": "X_"}],
        )
    )
    seeds["update"] = review(small_core([]), operation="UPDATE")
    seeds["unreadable"] = review(small_core([{"name": "POSTGRESQL_PASSWORD", "value": 123456789}]))
    for name, body in seeds.items():
        (out / f"{name}.json").write_text(json.dumps(body, separators=(",", ":")) + "\n")
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
