//! The `google.api.http` rules of the protos, read from the descriptor set: which REST method and
//! path template reach which gRPC method, and where the body goes. Templates follow
//! `google/api/http.proto`: literal segments, `{field.path}` and `{field=*}` / `{field=**}`
//! variables, and a trailing `:verb`.

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

/// One REST binding of a gRPC method (a method may have several: `additional_bindings`).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) method: MethodDescriptor,
    pub(crate) http_method: http::Method,
    pub(crate) template: Template,
    /// `""` none, `"*"` the whole request, else the request field the body fills.
    pub(crate) body: String,
    /// `""` or `"*"` the whole response, else the response field sent back.
    pub(crate) response_body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    /// A variable bound to a field path; `rest` for `**` (the remaining segments).
    Variable {
        field: String,
        rest: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) text: String,
    pub(crate) segments: Vec<Segment>,
    pub(crate) verb: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{method}: http rule {template:?}: {reason}")]
pub(crate) struct RuleError {
    method: String,
    template: String,
    reason: String,
}

impl Template {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let path = text
            .strip_prefix('/')
            .ok_or_else(|| "must start with /".to_owned())?;
        // The verb follows the last ':' outside braces.
        let mut depth = 0;
        let mut verb_at = None;
        for (i, c) in path.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(i),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(i) => (&path[..i], Some(path[i + 1..].to_owned())),
            None => (path, None),
        };
        let mut segments = Vec::new();
        for raw in path.split('/') {
            if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let rest = match pattern {
                    "*" => false,
                    "**" => true,
                    other => return Err(format!("variable pattern {other:?} is not supported")),
                };
                segments.push(Segment::Variable {
                    field: field.to_owned(),
                    rest,
                });
            } else if raw.is_empty() || raw.contains(['{', '}']) {
                return Err(format!("segment {raw:?} is malformed"));
            } else {
                segments.push(Segment::Literal(raw.to_owned()));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
            verb,
        })
    }

    /// The variables of `path` when it fits the template, percent-decoded.
    pub(crate) fn bind(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let mut bound = Vec::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Variable { field, rest: false } => {
                    let part = parts.get(i).filter(|p| !p.is_empty())?;
                    bound.push((field.clone(), decode(part)?));
                    i += 1;
                }
                Segment::Variable { field, rest: true } => {
                    let remaining = parts.get(i..)?.join("/");
                    bound.push((field.clone(), decode(&remaining)?));
                    i = parts.len();
                }
            }
        }
        (i == parts.len()).then_some(bound)
    }

    /// How specific the template is: literal segments beat variables (`/users/me` before
    /// `/users/{id}`).
    pub(crate) fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
            + usize::from(self.verb.is_some())
    }

    /// A concrete path that fits the template (variables as `x`), for checks against routes.
    pub(crate) fn example(&self) -> String {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(literal) => path.push_str(literal),
                Segment::Variable { .. } => path.push('x'),
            }
        }
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(verb);
        }
        path
    }
}

/// The fields along `path` (`user.user_id`) from `message`, if they all exist and all but the
/// last are singular messages.
pub(crate) fn field_path(message: &MessageDescriptor, path: &str) -> Option<Vec<FieldDescriptor>> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(name) = parts.next() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))?;
        if parts.peek().is_some() {
            match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                _ => return None,
            }
        }
        fields.push(field);
    }
    Some(fields)
}

fn decode(part: &str) -> Option<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn text(message: &DynamicMessage, field: &str) -> String {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Every http rule of every method in `pool`.
pub(crate) fn from_pool(pool: &DescriptorPool) -> Result<Vec<Rule>, RuleError> {
    let Some(extension) = pool.get_extension_by_name("google.api.http") else {
        return Ok(Vec::new());
    };
    let mut rules = Vec::new();
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&extension).into_owned() else {
                continue;
            };
            let mut bindings = vec![rule.clone()];
            if let Some(Value::List(more)) =
                rule.get_field_by_name("additional_bindings").as_deref()
            {
                bindings.extend(more.iter().filter_map(|v| v.as_message().cloned()));
            }
            for binding in bindings {
                rules.push(rule_of(&method, &binding)?);
            }
        }
    }
    Ok(rules)
}

fn rule_of(method: &MethodDescriptor, binding: &DynamicMessage) -> Result<Rule, RuleError> {
    let verbs = [
        ("get", http::Method::GET),
        ("put", http::Method::PUT),
        ("post", http::Method::POST),
        ("delete", http::Method::DELETE),
        ("patch", http::Method::PATCH),
    ];
    let found = verbs
        .into_iter()
        .map(|(name, verb)| (verb, text(binding, name)))
        .find(|(_, path)| !path.is_empty());
    let error = |template: &str, reason: String| RuleError {
        method: method.full_name().to_owned(),
        template: template.to_owned(),
        reason,
    };
    let Some((http_method, path)) = found else {
        return Err(error(
            "",
            "has no get/put/post/delete/patch pattern".to_owned(),
        ));
    };
    let template = Template::parse(&path).map_err(|reason| error(&path, reason))?;
    let body = text(binding, "body");
    let input = method.input();
    for segment in &template.segments {
        if let Segment::Variable { field, .. } = segment
            && field_path(&input, field).is_none()
        {
            return Err(error(
                &path,
                format!("{field} is not a field of {}", input.full_name()),
            ));
        }
    }
    if !body.is_empty() && body != "*" && input.get_field_by_name(&body).is_none() {
        return Err(error(
            &path,
            format!("body {body} is not a field of {}", input.full_name()),
        ));
    }
    Ok(Rule {
        method: method.clone(),
        http_method,
        template,
        body,
        response_body: text(binding, "response_body"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        Template::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn variables_nested_fields_and_verbs_bind() {
        let t = template("/v1/users/{user.user_id}");
        assert_eq!(
            t.bind("/v1/users/a%20b"),
            Some(vec![("user.user_id".to_owned(), "a b".to_owned())])
        );
        assert_eq!(t.bind("/v1/users"), None);
        assert_eq!(t.bind("/v1/users/a/b"), None);

        let t = template("/v1/orders/{order_id}:cancel");
        assert_eq!(
            t.bind("/v1/orders/42:cancel"),
            Some(vec![("order_id".to_owned(), "42".to_owned())])
        );
        assert_eq!(t.bind("/v1/orders/42"), None);
        assert_eq!(
            template("/v1/users:register").bind("/v1/users:register"),
            Some(vec![])
        );

        let t = template("/v1/files/{path=**}");
        assert_eq!(
            t.bind("/v1/files/a/b/c"),
            Some(vec![("path".to_owned(), "a/b/c".to_owned())])
        );
    }

    #[test]
    fn literal_segments_make_a_template_more_specific() {
        assert!(template("/v1/users/me").literals() > template("/v1/users/{id}").literals());
        assert_eq!(
            template("/v1/orders/{id}:cancel").example(),
            "/v1/orders/x:cancel"
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("v1/x").is_err());
        assert!(Template::parse("/v1//x").is_err());
        assert!(Template::parse("/v1/{x=a/*}").is_err());
    }

    #[test]
    fn the_protos_yield_every_annotated_method() {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
        let rules = from_pool(&pool).unwrap_or_else(|e| panic!("{e}"));
        let find = |name: &str| rules.iter().filter(|r| r.method.name() == name).count();
        assert_eq!(find("ListPayments"), 2, "additional_bindings count");
        assert_eq!(find("GetProduct"), 1);
        assert_eq!(find("ReserveStock"), 0, "internal methods have no route");
    }
}
