//! The part of Kong's DB-less declarative format (`kong/kong.yaml`) the gateway honours:
//! services with their upstream URL, routes (prefix and `~` regex paths, methods,
//! `regex_priority`), and plugins on services, routes or globally. Anything the gateway cannot
//! honour is an error at start-up, never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::rate_limit::LimitBy;

/// Plugins the gateway implements; any other name in the file is refused at start-up.
pub(crate) const KNOWN_PLUGINS: [&str; 6] = [
    "grpc-gateway",
    "jwt",
    "rate-limiting",
    "correlation-id",
    "cors",
    "prometheus",
];

/// The repository's `kong/kong.yaml`, as it was when the gateway was built.
pub(crate) const BUILTIN: &str = include_str!("../../../kong/kong.yaml");

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct KongConfig {
    #[serde(rename = "_format_version")]
    pub(crate) format_version: String,
    #[serde(default)]
    pub(crate) services: Vec<Service>,
    #[serde(default)]
    pub(crate) plugins: Vec<Plugin>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) url: String,
    /// Where the gateway sends the service's calls, from `url` (see [`upstream_of`]).
    #[serde(skip)]
    pub(crate) upstream: String,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    #[serde(default)]
    pub(crate) plugins: Vec<Plugin>,
}

/// Where the gateway sends a Kong service's calls: Kong's `grpc://` is HTTP/2 in the clear,
/// `grpcs://` over TLS. `None` for any other scheme.
fn upstream_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    match scheme {
        "grpc" => Some(format!("http://{rest}")),
        "grpcs" => Some(format!("https://{rest}")),
        _ => None,
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Route {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) paths: Vec<String>,
    /// Empty: every method.
    #[serde(default)]
    pub(crate) methods: Vec<String>,
    #[serde(default)]
    pub(crate) regex_priority: i64,
    #[serde(default = "yes")]
    pub(crate) strip_path: bool,
    #[serde(default)]
    pub(crate) plugins: Vec<Plugin>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Plugin {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) config: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KongError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid Kong declarative YAML: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl KongConfig {
    /// The given file, or the `kong/kong.yaml` of the repository, built in.
    pub(crate) fn load_or_builtin(path: Option<&std::path::Path>) -> Result<Self, KongError> {
        match path {
            Some(path) => Self::load(&path.display().to_string()),
            None => Self::parse("kong/kong.yaml (built in)", BUILTIN),
        }
    }

    /// Reads and checks the file: format 3.x, known plugins, routes with paths, and strip_path
    /// off (transcoding needs the whole path).
    pub(crate) fn load(path: &str) -> Result<Self, KongError> {
        let text = std::fs::read_to_string(path).map_err(|source| KongError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub(crate) fn parse(path: &str, text: &str) -> Result<Self, KongError> {
        let mut config: Self =
            serde_yaml_ng::from_str(text).map_err(|source| KongError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |reason: String| KongError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if !config.format_version.starts_with('3') {
            return Err(invalid(format!(
                "_format_version {:?} is not a Kong 3.x format",
                config.format_version
            )));
        }
        let mut unknown = Vec::new();
        for (owner, plugin) in config.all_plugins() {
            if !KNOWN_PLUGINS.contains(&plugin.name.as_str()) {
                unknown.push(format!("{} (on {owner})", plugin.name));
            }
        }
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "plugins the local gateway does not implement: {}; it implements {}",
                unknown.join(", "),
                KNOWN_PLUGINS.join(", ")
            )));
        }
        for (owner, plugin) in config.all_plugins() {
            if plugin.name == "rate-limiting"
                && let Some(by) = plugin.str("limit_by")
                && !LimitBy::KNOWN.contains(&by)
            {
                return Err(invalid(format!(
                    "rate-limiting on {owner}: limit_by {by:?} is not one the local gateway \
                     implements ({})",
                    LimitBy::KNOWN.join(", ")
                )));
            }
        }
        for service in &mut config.services {
            service.upstream = upstream_of(&service.url).ok_or_else(|| {
                invalid(format!(
                    "service {}: url {:?} must be grpc://host:port or grpcs://host:port (TLS)",
                    service.name, service.url
                ))
            })?;
        }
        for service in &config.services {
            if !service.plugins.iter().any(|p| p.name == "grpc-gateway") {
                return Err(invalid(format!(
                    "service {} has no grpc-gateway plugin, so nothing would transcode its routes",
                    service.name
                )));
            }
            for route in &service.routes {
                if route.paths.is_empty() {
                    return Err(invalid(format!("route {} has no paths", route.name)));
                }
                if route.strip_path {
                    return Err(invalid(format!(
                        "route {} must set strip_path: false (grpc-gateway matches the whole path)",
                        route.name
                    )));
                }
            }
        }
        Ok(config)
    }

    /// Every plugin with where it is attached, for reporting.
    pub(crate) fn all_plugins(&self) -> Vec<(String, &Plugin)> {
        let mut all: Vec<(String, &Plugin)> = self
            .plugins
            .iter()
            .map(|p| ("global".to_owned(), p))
            .collect();
        for service in &self.services {
            all.extend(
                service
                    .plugins
                    .iter()
                    .map(|p| (format!("service {}", service.name), p)),
            );
            for route in &service.routes {
                all.extend(
                    route
                        .plugins
                        .iter()
                        .map(|p| (format!("route {}", route.name), p)),
                );
            }
        }
        all
    }

    /// The enabled global plugin named `name`.
    pub(crate) fn global(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.enabled && p.name == name)
    }
}

impl Plugin {
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(|v| v.as_str())
    }

    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        self.config.get(key).and_then(serde_yaml_ng::Value::as_u64)
    }

    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        self.config.get(key).and_then(serde_yaml_ng::Value::as_bool)
    }

    pub(crate) fn strings(&self, key: &str) -> Vec<String> {
        self.config
            .get(key)
            .and_then(|v| v.as_sequence())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
_format_version: "3.0"
services:
  - name: s
    url: grpc://s:1
    plugins: [{name: grpc-gateway, config: {proto: /p.proto}}]
    routes: [{name: r, paths: [/v1/x], strip_path: false}]
"#;

    fn refusal(text: &str) -> String {
        KongConfig::parse("kong.yaml", text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_shipped_file_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../kong/kong.yaml");
        let config = KongConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.services.len(), 4);
        assert!(config.global("rate-limiting").is_some());
    }

    #[test]
    fn unknown_plugins_are_reported_with_where_they_are() {
        let text = MINIMAL.replace(
            "routes: [{name: r,",
            "routes: [{name: r, plugins: [{name: acl}],",
        );
        let message = refusal(&text);
        assert!(message.contains("acl (on route r)"), "{message}");
    }

    #[test]
    fn what_the_gateway_cannot_honour_is_refused() {
        assert!(refusal(&MINIMAL.replace("\"3.0\"", "\"2.1\"")).contains("not a Kong 3.x"));
        assert!(
            refusal(&MINIMAL.replace("strip_path: false", "strip_path: true"))
                .contains("strip_path")
        );
        assert!(
            refusal(&MINIMAL.replace("name: grpc-gateway", "name: cors"))
                .contains("no grpc-gateway")
        );
        assert!(refusal("services: [").contains("not valid Kong declarative YAML"));
        assert!(
            refusal(&MINIMAL.replace("url: grpc://s:1", "url: http://s:1"))
                .contains("must be grpc://host:port or grpcs://host:port")
        );
    }

    #[test]
    fn grpcs_services_are_reached_over_tls() {
        let config = KongConfig::parse("kong.yaml", &MINIMAL.replace("grpc://", "grpcs://"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.services[0].upstream, "https://s:1");
        let config = KongConfig::parse("kong.yaml", MINIMAL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.services[0].upstream, "http://s:1");
    }
}
