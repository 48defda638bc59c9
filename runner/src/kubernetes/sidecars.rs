//! The transformers of a job as native sidecars of the worker pod (init containers with
//! `restartPolicy: Always`), and the init container that shares the sluice binary with
//! transformer images of other makers.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, Probe, Volume, VolumeMount,
};

use crate::kubernetes::pod::{container_security, environment, hardened};
use crate::spec::Job;
use crate::spec::job::StepKind;
use crate::spec::kubernetes::SLUICE_IMAGE_ALIAS;

/// Seconds between two readiness probes of a transformer.
const PROBE_PERIOD_SECONDS: i32 = 2;
/// Where the sluice binary is shared with transformer containers of other images.
pub const SLUICE_BIN_DIR: &str = "/sluice-bin";
/// The init container that fills it.
pub const SLUICE_BIN_CONTAINER: &str = "sluice-bin";

/// The transformers of the job as native sidecars (init containers with
/// `restartPolicy: Always`): started before the worker, ready once `GET /health` on their
/// loopback port answers 200 within the step's `init_timeout`, stopped after the worker,
/// never keeping the Job alive. Each is named after its step; the image `sluice` is the
/// run's sluice image.
///
/// A transformer listens on 127.0.0.1 only, which the kubelet's own HTTP probes cannot
/// reach, so readiness is an exec probe: `sluice transformer probe` inside the container.
/// Containers of other images get the binary from a shared volume that a first init
/// container fills (`sluice transformer install`); an io step's container runs its command
/// behind the bridge (`sluice transformer serve --exec`).
pub fn transformer_sidecars(job: &Job, sluice_image: &str) -> Vec<Container> {
    let steps: Vec<_> = job
        .steps
        .iter()
        .filter_map(|step| match &step.kind {
            StepKind::Container(c) => Some((step, c)),
            _ => None,
        })
        .collect();
    let mut containers = Vec::new();
    if steps.iter().any(|(_, c)| c.image != SLUICE_IMAGE_ALIAS) {
        containers.push(Container {
            name: SLUICE_BIN_CONTAINER.into(),
            image: Some(sluice_image.to_string()),
            command: Some(vec!["sluice".into()]),
            args: Some(vec![
                "transformer".into(),
                "install".into(),
                SLUICE_BIN_DIR.into(),
            ]),
            security_context: Some(container_security()),
            volume_mounts: Some(vec![sluice_bin_mount()]),
            ..Default::default()
        });
    }
    for (step, c) in steps {
        let own = c.image == SLUICE_IMAGE_ALIAS;
        let sluice = if own {
            "sluice".to_string()
        } else {
            format!("{SLUICE_BIN_DIR}/sluice")
        };
        let port = c.listen_port();
        let (command, args) = match c.comm {
            crate::spec::container::Comm::Io => {
                let mut argv = crate::transform::container::harness::bridge_argv(&sluice, port);
                argv.extend(c.command.iter().flatten().cloned());
                argv.extend(c.args.iter().flatten().cloned());
                (Some(argv), None)
            }
            _ => (c.command.clone(), c.args.clone()),
        };
        let probes = (c.init_timeout.as_secs() as u32).div_ceil(PROBE_PERIOD_SECONDS as u32) as i32;
        let mounts = (!own).then(|| vec![sluice_bin_mount()]);
        containers.push(hardened(Container {
            name: step.name.clone(),
            image: Some(if own {
                sluice_image.to_string()
            } else {
                c.image.clone()
            }),
            command,
            args,
            env: Some(environment(Vec::new(), &c.env)),
            ports: Some(vec![ContainerPort {
                name: Some("transformer".into()),
                container_port: port as i32,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(Probe {
                exec: Some(ExecAction {
                    command: Some(vec![
                        sluice,
                        "transformer".into(),
                        "probe".into(),
                        "--port".into(),
                        port.to_string(),
                    ]),
                }),
                period_seconds: Some(PROBE_PERIOD_SECONDS),
                failure_threshold: Some(probes.max(1)),
                ..Default::default()
            }),
            resources: c.resources.clone(),
            restart_policy: Some("Always".into()),
            volume_mounts: mounts,
            ..Default::default()
        }));
    }
    containers
}

fn sluice_bin_mount() -> VolumeMount {
    VolumeMount {
        name: SLUICE_BIN_CONTAINER.into(),
        mount_path: SLUICE_BIN_DIR.into(),
        ..Default::default()
    }
}

/// The volume the sluice binary is shared through, when a sidecar needs it.
pub fn sidecar_volumes(sidecars: &[Container]) -> Vec<Volume> {
    sidecars
        .iter()
        .filter(|c| c.name == SLUICE_BIN_CONTAINER)
        .map(|_| Volume {
            name: SLUICE_BIN_CONTAINER.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        })
        .collect()
}
