//! The Helm chart, run without a cluster: `helm template` renders it, and each service binary
//! starts from its container's exact command line (the image's entrypoint and the chart's args)
//! with only the chart's environment and its secrets as mounted files, against this machine's
//! PostgreSQL and RabbitMQ. The migration Jobs run first, as the install hook does; then the
//! services must report SERVING, the `helm test` pod's probe must pass, and the README's checkout
//! through the gateway must end CONFIRMED. Only addresses are rewritten to loopback ports, and
//! mount paths to a scratch folder.

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use serde_json::Value;
use shop_common::storage::database_on;
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{channel, wait_for_health};

/// The folder the service binaries were built into (next to this test's own).
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let folder = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary sits in target/<profile>/deps")?;
    Ok(folder.to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every object `helm template` rendered, as JSON values.
async fn render(values: &Path) -> anyhow::Result<Vec<Value>> {
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

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// A Secret's or ConfigMap's data, decoded.
fn data_of(object: &Value) -> anyhow::Result<BTreeMap<String, String>> {
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
struct Ports {
    grpc: HashMap<&'static str, u16>,
    gateway: SocketAddr,
}

impl Ports {
    /// `value` with every `<name>.<ns>.svc.cluster.local:<port>` pointed at loopback: a service
    /// at its port here, anything else (Kong's proxy) at the local gateway.
    fn rewrite(&self, value: &str) -> String {
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
struct Container {
    binary: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn container(
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
    fn command(&self, bin: &Path) -> Command {
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

    /// Starts it with its log in `logs/<binary>.log`, for the failure message.
    fn spawn(&self, bin: &Path, logs: &Path) -> anyhow::Result<Child> {
        let log = std::fs::File::create(logs.join(format!("{}.log", self.binary)))?;
        self.command(bin)
            .stderr(log.try_clone()?)
            .stdout(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary))
    }
}

/// The last lines each service logged.
fn tails(logs: &Path) -> String {
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
struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binaries_run_as_the_chart_deploys_them_and_a_checkout_succeeds() -> anyhow::Result<()>
{
    let (Ok(server), Ok(amqp)) = (std::env::var("DATABASE_URL"), std::env::var("AMQP_URL")) else {
        eprintln!(
            "skipped: DATABASE_URL and AMQP_URL are not both set, so the chart's deployment is not run"
        );
        return Ok(());
    };
    if Command::new("helm").arg("version").output().await.is_err() {
        eprintln!("skipped: helm is not on PATH (scripts/install-tools.sh installs it)");
        return Ok(());
    }
    let bin = binaries()?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let scratch = tempfile::tempdir()?;
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs)?;

    let mut databases = BTreeMap::new();
    for service in ["user", "product", "order", "payment"] {
        let url = database_on(&server, &format!("test_deploy_{run}_{service}")).await?;
        databases.insert(service, url);
    }
    let vhost = Vhost(format!("test-deploy-{run}"));
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
    let mut broker = url::Url::parse(&amqp)?;
    broker.set_path(&format!("/{}", vhost.0));

    // The chart's own Secrets, made from these values (secrets.mode: chart).
    let values = serde_json::json!({
        "mesh": {"enabled": false},
        "kong": {"enabled": false},
        "services": {"product": {"extraEnv": {"PRODUCT_SEED_DEMO_CATALOGUE": "true"}}},
        "auth": {"bootstrapAdminEmail": "admin@deploy.test"},
        "secrets": {"mode": "chart", "chart": {
            "signingKeyPem": user_service::SigningKeys::generate_pem()?,
            "orderClientSecret": format!("order-client-secret-{run}"),
            "databaseUrls": databases,
            "amqpUrl": broker.as_str(),
            "bootstrapAdminPassword": "deployment admin password",
        }},
    });
    let values_file = scratch.path().join("values.yaml");
    std::fs::write(&values_file, serde_json::to_string(&values)?)?;
    let objects = render(&values_file).await?;

    let services = [
        "user-service",
        "product-service",
        "order-service",
        "payment-service",
    ];
    let mut grpc = HashMap::new();
    for service in services {
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

    // The Deployments, each on its own loopback ports.
    let mut children: Vec<Child> = Vec::new();
    for service in services {
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
        children.push(pod.spawn(&bin, &logs)?);
    }
    for service in services {
        let addr = SocketAddr::from(([127, 0, 0, 1], ports.grpc[service]));
        let mut ready = Err(anyhow::anyhow!("{service} did not answer"));
        for _ in 0..100 {
            if let Ok(channel) = channel(addr).await {
                ready = wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30))
                    .await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ready.with_context(|| format!("{service} never SERVING: {}", tails(&logs)))?;
    }

    // Kong's stand-in: the local gateway, reading the same kong.yaml, on the services above.
    let upstreams = services
        .iter()
        .map(|s| format!("{s}=http://127.0.0.1:{}", ports.grpc[s]))
        .collect::<Vec<_>>()
        .join(",");
    children.push(
        Command::new(bin.join("gateway"))
            .env_clear()
            .env("GATEWAY_HTTP_ADDR", ports.gateway.to_string())
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("GATEWAY_UPSTREAMS", upstreams)
            .env(
                "USER_SERVICE_URL",
                format!("http://127.0.0.1:{}", ports.grpc["user-service"]),
            )
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?,
    );

    // `helm test`'s pod: the `shop probe` it runs, against the same parts.
    let probe = named(&objects, "Pod", "shop-test").context("the helm test pod")?;
    let probe = container(&objects, probe, &scratch.path().join("shop-test"), &ports)?;
    let output = probe.command(&bin).stdout(Stdio::piped()).output().await?;
    ensure!(
        output.status.success(),
        "the helm test probe failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let block = readme
        .split("<!-- gateway-checkout:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- gateway-checkout:end -->").next())
        .context("the README has no gateway checkout block")?;
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("GW", format!("http://{}", ports.gateway))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("is ORDER_STATUS_CONFIRMED") {
        for child in &mut children {
            let _ = child.start_kill();
        }
        bail!(
            "the checkout through the gateway failed: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            tails(&logs)
        );
    }
    Ok(())
}
