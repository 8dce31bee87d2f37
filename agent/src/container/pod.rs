//! The pod and container a log file belongs to, read from kubelet's and docker's folder and
//! file names (and a symlink's target), as record headers named by OpenTelemetry's semantic
//! conventions.

/// Where a container's log file says it comes from: what kubelet's and docker's folder and file
/// names carry, read from the path alone (no API call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name.
    pub pod: Option<String>,
    /// The pod's uid.
    pub uid: Option<String>,
    /// The container's name.
    pub container: Option<String>,
    /// The container's id.
    pub container_id: Option<String>,
}

/// Record header names, as OpenTelemetry's semantic conventions name these attributes.
pub mod header {
    /// The pod's namespace.
    pub const NAMESPACE: &str = "k8s.namespace.name";
    /// The pod's name.
    pub const POD: &str = "k8s.pod.name";
    /// The pod's uid.
    pub const POD_UID: &str = "k8s.pod.uid";
    /// The container's name.
    pub const CONTAINER: &str = "k8s.container.name";
    /// The container's id.
    pub const CONTAINER_ID: &str = "container.id";
    /// `stdout` or `stderr`.
    pub const IOSTREAM: &str = "log.iostream";
}

impl PodMeta {
    /// What `path` says, following a symlink to its target: on a Kubernetes node,
    /// `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` links to
    /// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`; docker's json-file logs are
    /// `/var/lib/docker/containers/<id>/<id>-json.log`. None when neither layout fits.
    pub fn of(path: &std::path::Path) -> Option<PodMeta> {
        let mut m = PodMeta::default();
        m.merge(PodMeta::from_name(path));
        if let Some(target) = crate::rotation::link_target(path) {
            m.merge(PodMeta::from_name(&target));
        }
        if m.container_id.is_none() && m.uid.is_some() {
            m.container_id = Self::id_from_links(path, &m);
        }
        (m != PodMeta::default()).then_some(m)
    }

    /// A file reached without its link (a rotation found again after a restart): the
    /// container id is in the name of the link in `/var/log/containers`, beside `pods`.
    fn id_from_links(path: &std::path::Path, m: &PodMeta) -> Option<String> {
        let (pod, ns, container) = (m.pod.as_deref()?, m.namespace.as_deref()?, m.container.as_deref()?);
        let pods = path.ancestors().find(|a| a.file_name().is_some_and(|n| n == "pods"))?;
        let prefix = format!("{pod}_{ns}_{container}-");
        std::fs::read_dir(pods.parent()?.join("containers")).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?.strip_suffix(".log").map(str::to_owned)
        })
    }

    /// What one path's names say (no file system access).
    pub fn from_name(path: &std::path::Path) -> PodMeta {
        let name =
            |p: Option<&std::path::Path>| p.and_then(|p| p.file_name()).and_then(|n| n.to_str()).map(str::to_owned);
        let file = name(Some(path)).unwrap_or_default();
        let dir = path.parent();
        let (dir_name, parent_name) = (name(dir), name(dir.and_then(std::path::Path::parent)));
        let grandparent = name(dir.and_then(std::path::Path::parent).and_then(std::path::Path::parent));
        // /var/log/pods/<ns>_<pod>_<uid>/<container>/<n>.log (and its rotations).
        if grandparent.as_deref() == Some("pods")
            && let Some(pod_dir) = &parent_name
            && let [ns, pod, uid] = pod_dir.split('_').collect::<Vec<_>>()[..]
        {
            return PodMeta {
                namespace: Some(ns.into()),
                pod: Some(pod.into()),
                uid: Some(uid.into()),
                container: dir_name,
                container_id: None,
            };
        }
        // /var/log/containers/<pod>_<ns>_<container>-<id>.log
        if dir_name.as_deref() == Some("containers")
            && let Some(stem) = file.strip_suffix(".log")
            && let [pod, ns, rest] = stem.split('_').collect::<Vec<_>>()[..]
            && let Some((container, id)) = rest.rsplit_once('-')
        {
            return PodMeta {
                namespace: Some(ns.into()),
                pod: Some(pod.into()),
                uid: None,
                container: Some(container.into()),
                container_id: Some(id.into()),
            };
        }
        // /var/lib/docker/containers/<id>/<id>-json.log
        if parent_name.as_deref() == Some("containers")
            && let Some(id) = &dir_name
            && file.starts_with(id.as_str())
            && file.contains("-json.log")
        {
            return PodMeta { container_id: Some(id.clone()), ..PodMeta::default() };
        }
        PodMeta::default()
    }

    fn merge(&mut self, other: PodMeta) {
        for (mine, theirs) in [
            (&mut self.namespace, other.namespace),
            (&mut self.pod, other.pod),
            (&mut self.uid, other.uid),
            (&mut self.container, other.container),
            (&mut self.container_id, other.container_id),
        ] {
            if mine.is_none() {
                *mine = theirs;
            }
        }
    }

    /// The headers, by name, for the fields known.
    pub fn headers(&self) -> Vec<(&'static str, &str)> {
        [
            (header::NAMESPACE, &self.namespace),
            (header::POD, &self.pod),
            (header::POD_UID, &self.uid),
            (header::CONTAINER, &self.container),
            (header::CONTAINER_ID, &self.container_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}
