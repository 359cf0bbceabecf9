//! From a REST request to the gRPC method that serves it, the way Kong does: the Kong route
//! (regex paths first by `regex_priority`, then the longest prefix; methods if the route lists
//! them) picks the service, and that service's proto http rules pick the method.

use std::collections::BTreeMap;

use http::Method;
use prost_reflect::DescriptorPool;
use regex::Regex;

use crate::{
    kong::{KongConfig, Plugin},
    rules::{self, Rule},
};

/// A Kong service: where its gRPC server is and which http rules its proto has.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) rules: Vec<Rule>,
}

#[derive(Debug)]
pub(crate) struct KongRoute {
    pub(crate) name: String,
    pub(crate) upstream: usize,
    prefixes: Vec<String>,
    regexes: Vec<Regex>,
    methods: Vec<Method>,
    regex_priority: i64,
    /// The route's and its service's plugins (globals are kept apart).
    pub(crate) plugins: Vec<Plugin>,
}

impl KongRoute {
    /// The length of the longest matching prefix (`usize::MAX` for a regex), if the path matches.
    fn matches(&self, path: &str) -> Option<usize> {
        if self.regexes.iter().any(|r| r.is_match(path)) {
            return Some(usize::MAX);
        }
        self.prefixes
            .iter()
            .filter(|p| path.starts_with(p.as_str()))
            .map(String::len)
            .max()
    }

    fn allows(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    pub(crate) fn plugin(&self, name: &str) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.enabled && p.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RoutingError {
    #[error("the protos' descriptor set cannot be read: {0}")]
    Descriptors(#[from] prost_reflect::DescriptorError),
    #[error(transparent)]
    Rule(#[from] rules::RuleError),
    #[error("{0}")]
    Config(String),
}

#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) upstreams: Vec<Upstream>,
    pub(crate) routes: Vec<KongRoute>,
}

/// What a request path and method lead to.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    Method {
        route: &'a KongRoute,
        upstream: &'a Upstream,
        rule: &'a Rule,
        bound: Vec<(String, String)>,
    },
    /// The path exists, not with this method.
    WrongMethod {
        allowed: Vec<Method>,
    },
    NoRoute,
}

impl Routes {
    /// Joins the Kong file and the protos. `hosts` replaces a service's URL by name (local runs).
    pub(crate) fn new(
        kong: &KongConfig,
        hosts: &BTreeMap<String, String>,
    ) -> Result<Self, RoutingError> {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)?;
        let all_rules = rules::from_pool(&pool)?;
        let mut upstreams = Vec::new();
        let mut routes = Vec::new();
        for service in &kong.services {
            let proto = service
                .plugins
                .iter()
                .find(|p| p.name == "grpc-gateway")
                .and_then(|p| p.str("proto"))
                .unwrap_or_default();
            let file = pool
                .files()
                .find(|f| !f.name().is_empty() && proto.ends_with(f.name()))
                .ok_or_else(|| {
                    RoutingError::Config(format!(
                        "service {}: grpc-gateway proto {proto:?} is none of the shop's protos",
                        service.name
                    ))
                })?;
            let rules: Vec<Rule> = all_rules
                .iter()
                .filter(|r| r.method.parent_file().name() == file.name())
                .cloned()
                .collect();
            let url = match hosts.get(&service.name) {
                Some(url) => url.clone(),
                None => service.upstream.clone(),
            };
            let upstream = upstreams.len();
            upstreams.push(Upstream {
                name: service.name.clone(),
                url,
                rules,
            });
            for route in &service.routes {
                let mut prefixes = Vec::new();
                let mut regexes = Vec::new();
                for path in &route.paths {
                    match path.strip_prefix('~') {
                        Some(pattern) => regexes.push(Regex::new(pattern).map_err(|e| {
                            RoutingError::Config(format!(
                                "route {}: path {path:?}: {e}",
                                route.name
                            ))
                        })?),
                        None => prefixes.push(path.clone()),
                    }
                }
                let methods = route
                    .methods
                    .iter()
                    .map(|m| {
                        Method::from_bytes(m.as_bytes()).map_err(|_| {
                            RoutingError::Config(format!("route {}: method {m:?}", route.name))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                routes.push(KongRoute {
                    name: route.name.clone(),
                    upstream,
                    prefixes,
                    regexes,
                    methods,
                    regex_priority: route.regex_priority,
                    plugins: route
                        .plugins
                        .iter()
                        .chain(&service.plugins)
                        .cloned()
                        .collect(),
                });
            }
        }
        Ok(Self { upstreams, routes })
    }

    /// The Kong routes whose paths match, best first.
    fn candidates(&self, path: &str) -> Vec<&KongRoute> {
        let mut matching: Vec<(&KongRoute, usize)> = self
            .routes
            .iter()
            .filter_map(|r| r.matches(path).map(|len| (r, len)))
            .collect();
        matching.sort_by(|(a, a_len), (b, b_len)| {
            b_len
                .cmp(a_len)
                .then(b.regex_priority.cmp(&a.regex_priority))
        });
        matching.into_iter().map(|(r, _)| r).collect()
    }

    /// Whether any Kong route takes this path (for CORS preflights).
    pub(crate) fn route_for_path(&self, path: &str) -> Option<&KongRoute> {
        self.candidates(path).into_iter().next()
    }

    pub(crate) fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let candidates = self.candidates(path);
        let mut allowed: Vec<Method> = Vec::new();
        for route in &candidates {
            let upstream = &self.upstreams[route.upstream];
            let mut best: Option<(&Rule, Vec<(String, String)>)> = None;
            for rule in &upstream.rules {
                let Some(bound) = rule.template.bind(path) else {
                    continue;
                };
                if rule.http_method != *method || !route.allows(method) {
                    if route.allows(&rule.http_method) && !allowed.contains(&rule.http_method) {
                        allowed.push(rule.http_method.clone());
                    }
                    continue;
                }
                if best
                    .as_ref()
                    .is_none_or(|(b, _)| rule.template.literals() > b.template.literals())
                {
                    best = Some((rule, bound));
                }
            }
            if let Some((rule, bound)) = best {
                return Found::Method {
                    route,
                    upstream,
                    rule,
                    bound,
                };
            }
        }
        if allowed.is_empty() {
            Found::NoRoute
        } else {
            Found::WrongMethod { allowed }
        }
    }
}

impl Routes {
    /// Where the Kong file and the protos disagree: an annotated method no route reaches, or a
    /// route path that reaches no method. Empty when they agree.
    pub(crate) fn drift(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for upstream in &self.upstreams {
            for rule in &upstream.rules {
                let path = rule.template.example();
                let reached = matches!(
                    self.find(&rule.http_method, &path),
                    Found::Method { rule: found, .. } if found.method == rule.method
                );
                if !reached {
                    problems.push(format!(
                        "{} {} ({}) has no Kong route",
                        rule.http_method,
                        rule.template.text,
                        rule.method.full_name()
                    ));
                }
            }
        }
        for route in &self.routes {
            let upstream = &self.upstreams[route.upstream];
            let paths = route.prefixes.iter().map(|p| (p.clone(), None)).chain(
                route
                    .regexes
                    .iter()
                    .map(|r| (format!("~{}", r.as_str()), Some(r))),
            );
            for (path, regex) in paths {
                let reaches = upstream.rules.iter().any(|rule| {
                    let example = rule.template.example();
                    let on_path = match regex {
                        Some(regex) => regex.is_match(&example),
                        None => example.starts_with(path.as_str()),
                    };
                    on_path && route.allows(&rule.http_method)
                });
                if !reaches {
                    problems.push(format!(
                        "route {} path {path} reaches no method of {}",
                        route.name, upstream.name
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KONG: &str = crate::kong::BUILTIN;

    fn routes(text: &str) -> Routes {
        let kong = KongConfig::parse("kong.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        Routes::new(&kong, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_kong_file_and_the_protos_agree() {
        assert_eq!(routes(KONG).drift(), Vec::<String>::new());
    }

    #[test]
    fn a_method_without_a_route_is_drift() {
        let without = KONG.replace("          - ~/v1/orders/[^/]+/payments$\n", "");
        assert_ne!(without, KONG);
        let drift = routes(&without).drift();
        assert_eq!(
            drift,
            [
                "GET /v1/orders/{order_id}/payments (shop.payment.v1.PaymentService.ListPayments) has no Kong route"
            ]
        );
    }

    #[test]
    fn a_route_to_no_method_is_drift() {
        let extra = KONG.replace(
            "          - /v1/auth/refresh\n",
            "          - /v1/auth/refresh\n          - /v1/auth/logout\n",
        );
        assert_ne!(extra, KONG);
        let drift = routes(&extra).drift();
        assert_eq!(
            drift,
            ["route user-auth path /v1/auth/logout reaches no method of user-service"]
        );
    }

    #[test]
    fn routes_pick_the_method_kong_would() {
        let routes = routes(KONG);
        let found = |method: Method, path: &str| match routes.find(&method, path) {
            Found::Method {
                rule, route, bound, ..
            } => {
                format!("{} via {} {bound:?}", rule.method.name(), route.name)
            }
            Found::WrongMethod { allowed } => format!("405 {allowed:?}"),
            Found::NoRoute => "404".to_owned(),
        };
        assert_eq!(
            found(Method::GET, "/v1/users/me"),
            "GetMe via user-accounts []"
        );
        assert_eq!(
            found(Method::GET, "/v1/users/u1"),
            "GetUser via user-accounts [(\"user_id\", \"u1\")]"
        );
        assert_eq!(
            found(Method::POST, "/v1/users:register"),
            "Register via user-auth []"
        );
        assert_eq!(
            found(Method::GET, "/v1/orders/o1/payments"),
            "ListPayments via payments [(\"order_id\", \"o1\")]"
        );
        assert_eq!(
            found(Method::GET, "/v1/products/p1").split(' ').nth(2),
            Some("product-browse")
        );
        assert_eq!(
            found(Method::DELETE, "/v1/products/p1").split(' ').nth(2),
            Some("product-admin")
        );
        assert_eq!(
            found(Method::PUT, "/v1/products/p1"),
            "405 [GET, PATCH, DELETE]"
        );
        assert_eq!(found(Method::GET, "/v2/nothing"), "404");
    }
}
