//! The Helm chart's pods as local processes: `helm template` renders the chart, and each pod's
//! first container becomes a command line (the image's entrypoint, the chart's args and
//! environment, its mounted Secrets and ConfigMaps as files under a scratch folder) with
//! in-cluster addresses pointed at loopback ports. Shared by the deployment test and the chaos
//! suite, which each use their part of it.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Mutex, PoisonError},
};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use serde_json::Value;
use shop_common::storage::ScratchDatabase;
use tokio::process::{Child, Command};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The folder the service binaries were built into (next to this test's own).
pub(crate) fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let folder = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary sits in target/<profile>/deps")?;
    Ok(folder.to_owned())
}

/// Ports handed out by [`free_port`] in this process, never handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port nothing listens on, for a process a test starts. Drawn at random from below
/// the kernel's ephemeral range (32768 and up on Linux): a port the kernel picked there (bind to
/// port 0) can be the local port of another test's next outgoing connection before the process
/// meant to listen on it binds it, which then exits with "Address already in use".
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_768);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port between 20000 and 32767 after 1000 tries")
}

/// Every object `helm template` rendered, as JSON values.
pub(crate) async fn render(values: &Path) -> anyhow::Result<Vec<Value>> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/shop");
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/shop/ci/keys.yaml");
    let output = Command::new("helm")
        .args([
            "template",
            "shop",
            chart,
            "--namespace",
            "shop",
            "-f",
            keys,
            "-f",
        ])
        .arg(values)
        .output()
        .await
        .context("running helm")?;
    ensure!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

pub(crate) fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// A Secret's or ConfigMap's data, decoded.
pub(crate) fn data_of(object: &Value) -> anyhow::Result<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    if let Some(map) = object["stringData"].as_object() {
        for (key, value) in map {
            data.insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
        }
    }
    if let Some(map) = object["data"].as_object() {
        for (key, value) in map {
            let raw = value.as_str().unwrap_or_default();
            let text = if object["kind"] == "Secret" {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw)?)?
            } else {
                raw.to_owned()
            };
            data.insert(key.clone(), text);
        }
    }
    Ok(data)
}

/// Where each part listens on loopback, by its in-cluster host name's first label.
pub(crate) struct Ports {
    pub(crate) grpc: HashMap<&'static str, u16>,
    pub(crate) gateway: SocketAddr,
}

impl Ports {
    /// `value` with every `<name>.<ns>.svc.cluster.local:<port>` pointed at loopback: a service
    /// at its port here, anything else (Kong's proxy) at the local gateway.
    pub(crate) fn rewrite(&self, value: &str) -> String {
        let mut out = value.to_owned();
        while let Some(end) = out.find(".svc.cluster.local") {
            let start = out[..end].rfind("//").map_or(0, |i| i + 2);
            let host_end = end + ".svc.cluster.local".len();
            let port_end = out[host_end..].strip_prefix(':').map_or(host_end, |rest| {
                host_end
                    + 1
                    + rest
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(rest.len())
            });
            let service = out[start..end].split('.').next().unwrap_or_default();
            let target = match self.grpc.get(service) {
                Some(port) => format!("127.0.0.1:{port}"),
                None => self.gateway.to_string(),
            };
            out.replace_range(start..port_end, &target);
        }
        out
    }
}

/// A pod's first container as a command to run here; its mounts land under `root` (one folder
/// per pod, as each pod has its own filesystem).
pub(crate) struct Container {
    pub(crate) binary: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
}

pub(crate) fn container(
    objects: &[Value],
    pod: &Value,
    root: &Path,
    ports: &Ports,
) -> anyhow::Result<Container> {
    let spec = &pod["spec"];
    let main = &spec["containers"][0];
    let image = main["image"].as_str().context("an image")?;
    let binary = image
        .rsplit('/')
        .next()
        .and_then(|last| last.split(['@', ':']).next())
        .context("the image names the binary")?
        .to_owned();
    ensure!(
        main["command"].is_null(),
        "{binary}: the chart must not replace the image's entrypoint"
    );
    let args = main["args"]
        .as_array()
        .map(|args| {
            args.iter()
                .map(|a| ports.rewrite(a.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();

    // Files first: each mount's items land under the scratch folder at their mount path.
    let mut mounts = Vec::new();
    for mount in main["volumeMounts"].as_array().into_iter().flatten() {
        let path = mount["mountPath"].as_str().context("a mount path")?;
        let name = &mount["name"];
        let volume = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == *name)
            .context("the mount's volume")?;
        let local = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&local)?;
        let sources: Vec<&Value> = match volume["projected"]["sources"].as_array() {
            Some(sources) => sources.iter().collect(),
            None => vec![volume],
        };
        for source in sources {
            let (kind, object) = if !source["secret"].is_null() {
                ("Secret", &source["secret"])
            } else if !source["configMap"].is_null() {
                ("ConfigMap", &source["configMap"])
            } else {
                continue;
            };
            let name = object["name"]
                .as_str()
                .or_else(|| object["secretName"].as_str())
                .context("a source name")?;
            let data =
                data_of(named(objects, kind, name).with_context(|| format!("{kind} {name}"))?)?;
            for item in object["items"].as_array().into_iter().flatten() {
                let key = item["key"].as_str().context("an item key")?;
                let file = item["path"].as_str().unwrap_or(key);
                let content = data
                    .get(key)
                    .with_context(|| format!("{name} has no {key}"))?;
                std::fs::write(local.join(file), content)?;
            }
        }
        mounts.push((path.to_owned(), local));
    }

    let mut env = BTreeMap::new();
    for source in main["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .context("envFrom from a ConfigMap")?;
        env.extend(data_of(
            named(objects, "ConfigMap", name).context("the ConfigMap")?,
        )?);
    }
    for variable in main["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().context("an env name")?;
        let value = variable["value"]
            .as_str()
            .with_context(|| format!("{binary}: {name} must be a plain value"))?;
        env.insert(name.to_owned(), value.to_owned());
    }
    // The deepest mount a path lies in decides where it is.
    mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    for value in env.values_mut() {
        if let Some((path, local)) = mounts
            .iter()
            .find(|(path, _)| value.starts_with(path.as_str()))
        {
            *value = format!("{}{}", local.display(), &value[path.len()..]);
        }
        *value = ports.rewrite(value);
    }
    Ok(Container { binary, args, env })
}

impl Container {
    pub(crate) fn command(&self, bin: &Path) -> Command {
        let mut command = Command::new(bin.join(&self.binary));
        command
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts it with its log appended to `logs/<binary>.log`, for the failure message.
    pub(crate) fn spawn(&self, bin: &Path, logs: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", self.binary)))?;
        self.command(bin)
            .stderr(log.try_clone()?)
            .stdout(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary))
    }
}

/// The last lines each service logged.
pub(crate) fn tails(logs: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        out.push_str(&format!("\n== {}\n{tail}", entry.path().display()));
    }
    out
}

/// The RabbitMQ vhost of this test, deleted at the end.
pub(crate) struct Vhost(pub(crate) String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// The four services, by their Deployment names.
pub(crate) const SERVICES: [&str; 4] = [
    "user-service",
    "product-service",
    "order-service",
    "payment-service",
];

/// A service's database URL (given the service and the real URL) as the service should use it.
pub(crate) type DatabaseRoute = Box<dyn Fn(&str, &str) -> anyhow::Result<String> + Send + Sync>;
/// The broker's URL as the services should use it.
pub(crate) type BrokerRoute = Box<dyn Fn(&str) -> anyhow::Result<String> + Send + Sync>;

/// Where the services reach their dependencies: the real servers, or something in between (the
/// chaos suite's fault proxies).
pub(crate) struct Routes {
    pub(crate) database: DatabaseRoute,
    pub(crate) broker: BrokerRoute,
}

impl Routes {
    pub(crate) fn direct() -> Self {
        Self {
            database: Box::new(|_, url| Ok(url.to_owned())),
            broker: Box::new(|url| Ok(url.to_owned())),
        }
    }
}

/// `url` with its host and port replaced by loopback `port`.
pub(crate) fn via_port(url: &str, port: u16) -> anyhow::Result<String> {
    let mut url = url::Url::parse(url)?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(port))
        .map_err(|()| anyhow::anyhow!("{url} takes no port"))?;
    Ok(url.to_string())
}

/// The chart installed on loopback: its databases on this machine's PostgreSQL, a vhost of its
/// own on RabbitMQ, the migration Jobs run, and each service a process that can be started,
/// killed and started again as a pod would be.
pub(crate) struct LocalDeployment {
    pub(crate) scratch: tempfile::TempDir,
    pub(crate) logs: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) objects: Vec<Value>,
    pub(crate) ports: Ports,
    /// Each service's database, as the test reaches it (not through `Routes`).
    pub(crate) databases: BTreeMap<&'static str, String>,
    /// The vhost's URL, as the test reaches it.
    pub(crate) broker: String,
    pub(crate) admin: (String, String),
    pods: BTreeMap<&'static str, Container>,
    running: BTreeMap<&'static str, Child>,
    /// Dropped after the processes above are killed (`kill_on_drop`).
    _scratch: Vec<ScratchDatabase>,
    _vhost: Vhost,
}

impl LocalDeployment {
    /// Renders the chart with `values` on top of what every local run needs (mesh and Kong
    /// off, chart-made secrets for the databases and vhost of this run, named `test_<name>_…`)
    /// and runs the migration Jobs. No service runs yet.
    pub(crate) async fn install(
        name: &str,
        server: &str,
        amqp: &str,
        routes: &Routes,
        values: Value,
    ) -> anyhow::Result<Self> {
        let bin = binaries()?;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let scratch = tempfile::tempdir()?;
        let logs = scratch.path().join("logs");
        std::fs::create_dir_all(&logs)?;

        let mut databases = BTreeMap::new();
        let mut scratch_databases = Vec::new();
        let mut routed = BTreeMap::new();
        for (service, short) in SERVICES
            .into_iter()
            .zip(["user", "product", "order", "payment"])
        {
            let database = format!("test_{name}_{run}_{short}");
            let (url, scratch) = ScratchDatabase::create(server, &database).await?;
            scratch_databases.push(scratch);
            routed.insert(short, (routes.database)(service, &url)?);
            databases.insert(service, url);
        }
        let vhost = Vhost(format!("test-{name}-{run}"));
        for args in [
            vec!["add_vhost", vhost.0.as_str()],
            vec![
                "set_permissions",
                "--vhost",
                vhost.0.as_str(),
                "guest",
                ".*",
                ".*",
                ".*",
            ],
        ] {
            let status = Command::new("rabbitmqctl")
                .args(&args)
                .output()
                .await?
                .status;
            ensure!(status.success(), "rabbitmqctl {args:?}");
        }
        let mut broker = url::Url::parse(amqp)?;
        broker.set_path(&format!("/{}", vhost.0));
        let broker = broker.to_string();

        let admin = (
            format!("admin@{name}.test"),
            format!("{name} admin password"),
        );
        let mut all = serde_json::json!({
            "mesh": {"enabled": false},
            "kong": {"enabled": false},
            "auth": {"bootstrapAdminEmail": admin.0},
            "secrets": {"mode": "chart", "chart": {
                "signingKeyPem": user_service::SigningKeys::generate_pem()?,
                "orderClientSecret": format!("order-client-secret-{run}"),
                "databaseUrls": routed,
                "amqpUrl": (routes.broker)(&broker)?,
                "bootstrapAdminPassword": admin.1,
            }},
        });
        merge(&mut all, values);
        let values_file = scratch.path().join("values.yaml");
        std::fs::write(&values_file, serde_json::to_string(&all)?)?;
        let objects = render(&values_file).await?;

        let mut grpc = HashMap::new();
        for service in SERVICES {
            grpc.insert(service, free_port()?);
        }
        let ports = Ports {
            grpc,
            gateway: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        };

        // The install hook: every migration Job, to completion.
        let jobs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Job").collect();
        ensure!(
            jobs.len() == 4,
            "one migration Job per service, found {}",
            jobs.len()
        );
        for job in jobs {
            let root = scratch
                .path()
                .join(job["metadata"]["name"].as_str().unwrap_or("job"));
            let job = container(&objects, &job["spec"]["template"], &root, &ports)?;
            ensure!(job.args == ["migrate"], "{}: {:?}", job.binary, job.args);
            let output = job.command(&bin).output().await?;
            ensure!(
                output.status.success(),
                "{} migrate: {}",
                job.binary,
                String::from_utf8_lossy(&output.stderr)
            );
        }

        // The Deployments' pods, each on its own loopback ports.
        let mut pods = BTreeMap::new();
        for service in SERVICES {
            let deployment = named(&objects, "Deployment", service).context(service)?;
            let root = scratch.path().join(service);
            let mut pod = container(&objects, &deployment["spec"]["template"], &root, &ports)?;
            let listen = pod
                .env
                .keys()
                .find(|k| k.ends_with("_GRPC_ADDR"))
                .cloned()
                .with_context(|| format!("{service} sets its listen address"))?;
            pod.env
                .insert(listen, format!("127.0.0.1:{}", ports.grpc[service]));
            pod.env
                .insert("METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned());
            pods.insert(service, pod);
        }
        Ok(Self {
            scratch,
            logs,
            bin,
            objects,
            ports,
            databases,
            _scratch: scratch_databases,
            broker,
            admin,
            pods,
            running: BTreeMap::new(),
            _vhost: vhost,
        })
    }

    pub(crate) fn grpc_addr(&self, service: &str) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            self.ports.grpc.get(service).copied().unwrap_or(0),
        ))
    }

    /// A pod's environment, to add to before it starts.
    pub(crate) fn env_mut(&mut self, service: &str) -> Option<&mut BTreeMap<String, String>> {
        self.pods.get_mut(service).map(|pod| &mut pod.env)
    }

    /// Starts `service`'s pod (again, after a kill), with its log appended.
    pub(crate) fn start(&mut self, service: &'static str) -> anyhow::Result<()> {
        let pod = self.pods.get(service).context(service)?;
        let child = pod.spawn(&self.bin, &self.logs)?;
        self.running.insert(service, child);
        Ok(())
    }

    /// SIGKILL, as the kubelet does after the grace period (or the kernel's OOM killer).
    pub(crate) async fn kill(&mut self, service: &str) -> anyhow::Result<()> {
        if let Some(mut child) = self.running.remove(service) {
            child.kill().await?;
        }
        Ok(())
    }

    /// Waits until `service` answers health checks with SERVING.
    pub(crate) async fn await_serving(
        &mut self,
        service: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let endpoint = format!("http://{}", self.grpc_addr(service));
        loop {
            if let Some(child) = self.running.get_mut(service)
                && let Some(status) = child.try_wait()?
            {
                bail!("{service} exited with {status}: {}", tails(&self.logs));
            }
            let status = async {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?
                    .connect()
                    .await?;
                let reply = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await?;
                anyhow::Ok(reply.into_inner().status())
            };
            if matches!(
                tokio::time::timeout(std::time::Duration::from_secs(2), status).await,
                Ok(Ok(ServingStatus::Serving))
            ) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{service} never SERVING: {}", tails(&self.logs));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Kong's stand-in: the local gateway, reading the same kong.yaml, on the services above.
    pub(crate) fn start_gateway(&mut self) -> anyhow::Result<()> {
        let upstreams = SERVICES
            .iter()
            .map(|s| format!("{s}=http://{}", self.grpc_addr(s)))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new(self.bin.join("gateway"))
            .env_clear()
            .env("GATEWAY_HTTP_ADDR", self.ports.gateway.to_string())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("GATEWAY_UPSTREAMS", upstreams)
            .env(
                "USER_SERVICE_URL",
                format!("http://{}", self.grpc_addr("user-service")),
            )
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.running.insert("gateway", child);
        Ok(())
    }

    /// Stops every process it started.
    pub(crate) async fn stop(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.running) {
            let _ = child.kill().await;
        }
    }
}

/// `patch` merged into `target`, objects key by key.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}
