//! The runtime plan: VM sizing, env and argv through container-semantics, volume wiring.

use std::collections::BTreeMap;

use pod_spec::load::load_str;
use pod_spec::model::Pod;
use pod_spec::plan::{
    plan_pod, size_vm, ImageConfigView, PlanError, VolumeSourcePlan, POD_IP_PLACEHOLDER,
};

fn pod(text: &str) -> Pod {
    let docs = load_str("t.yaml", text).unwrap();
    docs.into_iter()
        .next()
        .unwrap()
        .outcome
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn busybox() -> BTreeMap<String, ImageConfigView> {
    let cfg = ImageConfigView {
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/root".into()],
        working_dir: String::new(),
        user: String::new(),
    };
    BTreeMap::from([("busybox:latest".to_string(), cfg)])
}

const HEAD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n";

fn sized(containers: &str) -> (u32, u64) {
    let vm = size_vm(&pod(&format!("{HEAD}{containers}")));
    (vm.vcpus, vm.memory_mib)
}

#[test]
fn vm_sizing_defaults_and_sums() {
    // Nothing set: the defaults.
    assert_eq!(
        sized("  containers: [{name: a, image: busybox}]\n"),
        (1, 256)
    );
    // Limits win over requests; cpu rounds up; memory gets the 64 MiB overhead.
    assert_eq!(
        sized(concat!(
            "  containers:\n",
            "  - {name: a, image: busybox, resources: {limits: {cpu: 1500m, memory: 256Mi}, requests: {cpu: 100m, memory: 64Mi}}}\n",
            "  - {name: b, image: busybox, resources: {requests: {cpu: 250m, memory: 100M}}}\n",
        )),
        // cpu 1.75 -> 2; memory 256Mi + 100e6 bytes (95.37Mi -> 96) + 128
        (2, 256 + 96 + 128)
    );
    // Init containers count as max(init) against sum(app).
    assert_eq!(
        sized(concat!(
            "  initContainers:\n",
            "  - {name: i, image: busybox, resources: {limits: {cpu: 3, memory: 1Gi}}}\n",
            "  containers:\n",
            "  - {name: a, image: busybox, resources: {limits: {cpu: 1, memory: 128Mi}}}\n",
            "  - {name: b, image: busybox, resources: {limits: {cpu: 1, memory: 128Mi}}}\n",
        )),
        (3, 1024 + 128)
    );
    // A tiny request still gets one vCPU.
    assert_eq!(
        sized("  containers: [{name: a, image: busybox, resources: {requests: {cpu: 1m}}}]\n"),
        (1, 256)
    );
    // Memory-backed emptyDir limits live in guest RAM.
    assert_eq!(
        sized(concat!(
            "  volumes: [{name: t, emptyDir: {medium: Memory, sizeLimit: 32Mi}}]\n",
            "  containers: [{name: a, image: busybox, resources: {limits: {memory: 32Mi}}}]\n",
        )),
        (1, 32 + 32 + 128)
    );
}

#[test]
fn env_and_argv_follow_kubernetes() {
    let p = pod(include_str!("examples/busy-pod.yaml"));
    let plan = plan_pod(&p, "uid-1", &busybox()).unwrap();
    let c = &plan.containers[0];
    assert_eq!(c.argv, ["/bin/echo", "ubuntu, on"]);
    assert_eq!(
        c.env,
        [
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".into(), "/root".into()),
            ("os".into(), "ubuntu".into()),
            ("debug".into(), "on".into()),
        ]
    );
    assert_eq!(c.working_dir, "/");
    assert_eq!(plan.restart_policy, "Always");
    assert_eq!(plan.hostname, "busy-pod");
    assert_eq!(plan.termination_grace_period_seconds, 30);
}

#[test]
fn image_entrypoint_and_cmd_combine_with_spec() {
    let text = format!(
        "{HEAD}  containers:\n  - name: a\n    image: app:1\n    args: [\"--port=$(PORT)\", \"$$(PORT)\", \"$(MISSING)\"]\n    env: [{{name: PORT, value: \"80\"}}]\n"
    );
    let images = BTreeMap::from([(
        "app:1".to_string(),
        ImageConfigView {
            entrypoint: vec!["/app".into()],
            cmd: vec!["--default".into()],
            env: vec!["PORT=1".into()],
            working_dir: "/srv".into(),
            user: "1000".into(),
        },
    )]);
    let plan = plan_pod(&pod(&text), "u", &images).unwrap();
    let c = &plan.containers[0];
    assert_eq!(c.argv, ["/app", "--port=80", "$(PORT)", "$(MISSING)"]);
    assert_eq!(c.env, [("PORT".to_string(), "80".to_string())]);
    assert_eq!((c.working_dir.as_str(), c.user.as_str()), ("/srv", "1000"));
    assert_eq!(c.image_pull_policy, "IfNotPresent");
}

#[test]
fn nothing_to_run_and_missing_image_config_are_errors() {
    let text = format!("{HEAD}  containers: [{{name: a, image: scratchy}}]\n");
    let p = pod(&text);
    assert!(matches!(
        plan_pod(&p, "u", &BTreeMap::new()),
        Err(PlanError::MissingImageConfig { .. })
    ));
    let images = BTreeMap::from([("scratchy".to_string(), ImageConfigView::default())]);
    assert!(matches!(
        plan_pod(&p, "u", &images),
        Err(PlanError::Command { .. })
    ));
    let mut bad = p.clone();
    bad.spec.containers[0].name = "Bad".into();
    assert!(matches!(
        plan_pod(&bad, "u", &images),
        Err(PlanError::Invalid(_))
    ));
}

#[test]
fn field_refs_and_pod_ip_placeholder() {
    let text = format!(
        "{HEAD}  containers:\n  - name: a\n    image: busybox:latest\n    command: [echo, \"$(IP)/$(NAME)\"]\n    env:\n    - {{name: NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}\n    - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}\n    - {{name: UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}\n    - {{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}\n    - {{name: URL, value: \"http://$(IP):80/$(NS)\"}}\n"
    );
    let mut plan = plan_pod(&pod(&text), "1234-uid", &busybox()).unwrap();
    assert!(plan.needs_pod_ip());
    let env: BTreeMap<_, _> = plan.containers[0].env.iter().cloned().collect();
    assert_eq!(env["NAME"], "p");
    assert_eq!(env["NS"], "default");
    assert_eq!(env["UID"], "1234-uid");
    assert_eq!(env["IP"], POD_IP_PLACEHOLDER);
    plan.fill_pod_ip("10.0.0.2");
    assert!(!plan.needs_pod_ip());
    let env: BTreeMap<_, _> = plan.containers[0].env.iter().cloned().collect();
    assert_eq!(env["URL"], "http://10.0.0.2:80/default");
    assert_eq!(plan.containers[0].argv, ["echo", "10.0.0.2/p"]);
}

#[test]
fn volume_wiring() {
    let p = pod(include_str!("valid/everything.yaml"));
    let images = BTreeMap::from([
        (
            "registry.example.com:5000/team/app:1.2".to_string(),
            ImageConfigView::default(),
        ),
        (
            "busybox@sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .to_string(),
            ImageConfigView::default(),
        ),
    ]);
    let plan = plan_pod(&p, "u", &images).unwrap();
    assert_eq!(
        plan.volumes
            .iter()
            .map(|v| v.source.clone())
            .collect::<Vec<_>>(),
        [
            VolumeSourcePlan::EmptyDir {
                memory: true,
                size_limit_bytes: Some(64 << 20)
            },
            VolumeSourcePlan::HostPath {
                path: "/tmp/peapod-everything".into(),
                path_type: "DirectoryOrCreate".into()
            },
            VolumeSourcePlan::EmptyDir {
                memory: false,
                size_limit_bytes: None
            },
        ]
    );
    let m = &plan.containers[0].mounts;
    assert_eq!(m.len(), 3);
    assert_eq!(
        (
            m[1].volume.as_str(),
            m[1].mount_path.as_str(),
            m[1].read_only,
            m[1].sub_path.as_str()
        ),
        ("host", "/host", true, "sub/dir")
    );
    assert!(!m[0].read_only);
    assert_eq!(plan.hostname, "every");
    assert_eq!(plan.vm.vcpus, 2);
    assert_eq!(plan.containers[0].cpu_limit_millis, Some(1500));
    assert_eq!(plan.containers[0].ports[0].host_port, Some(18080));
    assert!(plan.share_process_namespace);
    // The plan serialises for the VMM and the agent.
    let json = serde_json::to_string(&plan).unwrap();
    let back: pod_spec::plan::PodPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn requests_are_planned_with_limits_as_their_default() {
    let p = pod(&format!(
        "{HEAD}{}",
        concat!(
            "  initContainers:\n",
            "  - {name: i, image: busybox:latest, resources: {requests: {memory: 32Mi}}}\n",
            "  containers:\n",
            "  - {name: a, image: busybox:latest, resources: {limits: {cpu: 500m, memory: 256Mi}, requests: {cpu: 100m, memory: 64Mi}}}\n",
            "  - {name: b, image: busybox:latest, resources: {limits: {cpu: 1, memory: 128Mi}}}\n",
            "  - {name: c, image: busybox:latest}\n",
        )
    ));
    let plan = plan_pod(&p, "uid", &busybox()).unwrap();
    let req = |c: &pod_spec::plan::ContainerPlan| (c.cpu_request_millis, c.memory_request_bytes);
    assert_eq!(req(&plan.init_containers[0]), (None, Some(32 << 20)));
    assert_eq!(req(&plan.containers[0]), (Some(100), Some(64 << 20)));
    assert_eq!(req(&plan.containers[1]), (Some(1000), Some(128 << 20)));
    assert_eq!(req(&plan.containers[2]), (None, None));
    assert_eq!(plan.containers[0].memory_limit_bytes, Some(256 << 20));
}
