//! REST to gRPC and back, with messages built at run time from the descriptors: path variables
//! and query parameters set fields (nested with dots), a JSON body fills the request or one
//! field, and responses are proto3 JSON (lowerCamel names, enums as names, 64-bit integers as
//! strings, well-known types in their JSON forms). Errors name the field. A PATCH's
//! `google.protobuf.FieldMask` comes from the query, or else from the fields the body sends.

use std::collections::BTreeMap;

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

use crate::rules::{Rule, field_path};

/// A request the client got wrong: 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadRequest(pub(crate) String);

/// Parses one text value (from a path or query) as the field's type.
fn scalar(field: &FieldDescriptor, name: &str, raw: &str) -> Result<Value, BadRequest> {
    let wrong = |what: &str| BadRequest(format!("{name} must be {what}, not {raw:?}"));
    Ok(match field.kind() {
        Kind::String => Value::String(raw.to_owned()),
        Kind::Bool => Value::Bool(raw.parse().map_err(|_| wrong("true or false"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(raw.parse().map_err(|_| wrong("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(raw.parse().map_err(|_| wrong("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            raw.parse()
                .map_err(|_| wrong("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            raw.parse()
                .map_err(|_| wrong("an unsigned 64-bit integer"))?,
        ),
        Kind::Double => Value::F64(raw.parse().map_err(|_| wrong("a number"))?),
        Kind::Float => Value::F32(raw.parse().map_err(|_| wrong("a number"))?),
        Kind::Enum(e) => {
            let value = e
                .get_value_by_name(raw)
                .or_else(|| raw.parse().ok().and_then(|n| e.get_value(n)));
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            Value::EnumNumber(
                value
                    .ok_or_else(|| wrong(&format!("one of {}", names.join(", "))))?
                    .number(),
            )
        }
        Kind::Bytes | Kind::Message(_) => {
            return Err(BadRequest(format!(
                "{name} cannot be set from a path or query parameter"
            )));
        }
    })
}

/// Sets `path` (dotted) in `message` to `raw`; a repeated field gets `raw` appended.
fn set(message: &mut DynamicMessage, path: &str, raw: &str) -> Result<(), BadRequest> {
    let descriptor = message.descriptor();
    let unknown = || BadRequest(format!("{path} is not a field of {}", descriptor.name()));
    let fields = field_path(&descriptor, path).ok_or_else(unknown)?;
    let Some((last, parents)) = fields.split_last() else {
        return Err(unknown());
    };
    let mut target = message;
    for parent in parents {
        let Value::Message(inner) = target.get_field_mut(parent) else {
            return Err(unknown());
        };
        target = inner;
    }
    if last.is_map() {
        return Err(BadRequest(format!(
            "{path} is a map and cannot be set from a query"
        )));
    }
    if is_field_mask(last) {
        add_mask_paths(target, last, mask_paths(path, raw)?);
        return Ok(());
    }
    let value = scalar(last, path, raw)?;
    if last.is_list() {
        if let Value::List(items) = target.get_field_mut(last) {
            items.push(value);
        }
    } else {
        target.set_field(last, value);
    }
    Ok(())
}

const FIELD_MASK: &str = "google.protobuf.FieldMask";

fn is_field_mask(field: &FieldDescriptor) -> bool {
    !field.is_list() && matches!(field.kind(), Kind::Message(m) if m.full_name() == FIELD_MASK)
}

/// The paths of a FieldMask in its proto3 JSON form (`stock,imageUrl`: comma-separated,
/// lowerCamel segments joined by dots) as the proto names the service compares with
/// (`image_url`). Proto names pass unchanged, so `update_mask=image_url` works too. Whether a
/// path names a field is the service's to say: it knows which fields it lets change.
fn mask_paths(name: &str, raw: &str) -> Result<Vec<String>, BadRequest> {
    raw.split(',')
        .map(|path| {
            if path.split('.').any(str::is_empty) {
                return Err(BadRequest(format!(
                    "{name} must be field paths separated by commas (stock,imageUrl), not {raw:?}"
                )));
            }
            Ok(path.chars().fold(String::new(), |mut snake, c| {
                if c.is_ascii_uppercase() {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
                snake
            }))
        })
        .collect()
}

/// Appends `paths` to the mask in `field` (a repeated query key adds to it).
fn add_mask_paths(message: &mut DynamicMessage, field: &FieldDescriptor, paths: Vec<String>) {
    if let Value::Message(mask) = message.get_field_mut(field)
        && let Some(Value::List(list)) = mask.get_field_by_name_mut("paths")
    {
        list.extend(paths.into_iter().map(Value::String));
    }
}

/// Resource fields a derived mask leaves out although the body may carry them: the optimistic
/// concurrency token (`version` here, `etag` in AIP-154) is the condition of the update, not a
/// new value, and the server-set times (AIP-148) come along when a client sends back what it
/// read. The service refuses all of them in a mask, so naming them would fail every
/// read-modify-write; an explicit mask still reaches the service as given.
const NOT_CHANGES: [&str; 4] = ["version", "etag", "create_time", "update_time"];

/// Without a mask from the client, a PATCH with a field body (`body: "product"`) gets one, as
/// grpc-gateway does: proto3 cannot tell `"stock": 0` from no stock, so a service that reads "no
/// mask" as "every non-empty field" would drop the zero. The mask is the top-level fields of
/// the resource that the body (or a `product.x` query key) sets, by proto name, less those
/// bound from the path (they select the resource) and [`NOT_CHANGES`]. Only a request message
/// with a FieldMask named `update_mask` gets one; with `body: "*"` the client sends its own.
fn derive_mask(
    rule: &Rule,
    bound: &[(String, String)],
    from_query: &[String],
    body: &[u8],
    message: &mut DynamicMessage,
) -> Result<(), BadRequest> {
    let input = rule.method.input();
    let Some(mask_field) = input.get_field_by_name("update_mask").filter(is_field_mask) else {
        return Ok(());
    };
    let Some(Kind::Message(resource)) = input.get_field_by_name(&rule.body).map(|f| f.kind())
    else {
        return Ok(());
    };
    let sent = match message.get_field(&mask_field).as_ref() {
        Value::Message(mask) => mask
            .get_field_by_name("paths")
            .is_some_and(|paths| matches!(paths.as_ref(), Value::List(l) if !l.is_empty())),
        _ => false,
    };
    if sent {
        return Ok(());
    }
    let mut keys: Vec<String> = from_query.to_vec();
    if !body.iter().all(u8::is_ascii_whitespace) {
        // The body already parsed as the resource, so it is an object.
        let object: BTreeMap<String, serde::de::IgnoredAny> = serde_json::from_slice(body)
            .map_err(|e| BadRequest(format!("the body is not a JSON object: {e}")))?;
        keys.extend(object.into_keys());
    }
    let resolve = |name: &str| {
        resource
            .get_field_by_name(name)
            .or_else(|| resource.get_field_by_json_name(name))
    };
    let prefix = format!("{}.", rule.body);
    let from_path: Vec<FieldDescriptor> = bound
        .iter()
        .filter_map(|(field, _)| resolve(field.strip_prefix(&prefix)?))
        .collect();
    let mut fields: Vec<FieldDescriptor> = keys
        .iter()
        .filter_map(|key| resolve(key))
        .filter(|f| !from_path.contains(f) && !NOT_CHANGES.contains(&f.name()))
        .collect();
    fields.sort_by_key(FieldDescriptor::number);
    fields.dedup();
    if !fields.is_empty() {
        let paths = fields.iter().map(|f| f.name().to_owned()).collect();
        add_mask_paths(message, &mask_field, paths);
    }
    Ok(())
}

/// Parses `json` as a `descriptor` message. Unknown fields and wrong types are refused with the
/// path of the offending field.
fn from_json(
    descriptor: &MessageDescriptor,
    json: &[u8],
    prefix: &str,
) -> Result<DynamicMessage, BadRequest> {
    let mut inner = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut inner, &mut track);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let parsed = DynamicMessage::deserialize_with_options(descriptor.clone(), tracked, &options)
        .and_then(|m| inner.end().map(|()| m));
    parsed.map_err(|error| {
        let path = track.path().to_string();
        let at = match (prefix, path.as_str()) {
            ("", "." | "") => "the body".to_owned(),
            (prefix, "." | "") => prefix.to_owned(),
            ("", path) => path.to_owned(),
            (prefix, path) => format!("{prefix}.{path}"),
        };
        if error.is_syntax() || error.is_eof() {
            BadRequest(format!("the body is not valid JSON: {error}"))
        } else {
            BadRequest(format!("{at}: {}", strip_position(&error.to_string())))
        }
    })
}

/// serde_json appends " at line 1 column 9"; the field path says where better.
fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// The gRPC request for `rule` from the REST request's path variables, query and body.
pub(crate) fn request(
    rule: &Rule,
    bound: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, BadRequest> {
    let input = rule.method.input();
    let body_given = !body.iter().all(u8::is_ascii_whitespace);
    let mut message = match rule.body.as_str() {
        "*" if body_given => from_json(&input, body, "")?,
        "" if body_given => {
            return Err(BadRequest(format!(
                "{} {} takes no body; send its fields as query parameters",
                rule.http_method, rule.template.text
            )));
        }
        "" | "*" => DynamicMessage::new(input.clone()),
        field => {
            let mut message = DynamicMessage::new(input.clone());
            if body_given {
                let descriptor = input
                    .get_field_by_name(field)
                    .ok_or_else(|| BadRequest(format!("{field} is not a field")))?;
                let Kind::Message(inner) = descriptor.kind() else {
                    return Err(BadRequest(format!("{field} is not a message")));
                };
                let value = from_json(&inner, body, field)?;
                message.set_field(&descriptor, Value::Message(value));
            }
            message
        }
    };
    for (field, value) in bound {
        set(&mut message, field, value)?;
    }
    // Fields of a field body set from the query (`product.stock=0`) are changes too.
    let mut into_body = Vec::new();
    if let Some(query) = query
        && rule.body != "*"
    {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if bound.iter().any(|(field, _)| field == key.as_ref()) {
                return Err(BadRequest(format!("{key} is already set by the path")));
            }
            set(&mut message, &key, &value)?;
            if let Some([top, field, ..]) = field_path(&input, &key).as_deref()
                && top.name() == rule.body
            {
                into_body.push(field.name().to_owned());
            }
        }
    }
    if rule.http_method == http::Method::PATCH {
        derive_mask(rule, bound, &into_body, body, &mut message)?;
    }
    Ok(message)
}

/// The response as proto3 JSON, or only its `response_body` field.
pub(crate) fn response_json(
    message: &DynamicMessage,
    response_body: &str,
) -> Result<Vec<u8>, serde_json::Error> {
    let options = SerializeOptions::new();
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    match response_body {
        "" | "*" => {
            message.serialize_with_options(&mut serializer, &options)?;
        }
        field => match message.get_field_by_name(field).as_deref() {
            Some(Value::Message(inner)) => {
                inner.serialize_with_options(&mut serializer, &options)?
            }
            _ => out.extend_from_slice(b"null"),
        },
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::rules::from_pool;

    fn rule(name: &str) -> Rule {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
        let rules = from_pool(&pool).unwrap_or_else(|e| panic!("{e}"));
        rules
            .into_iter()
            .find(|r| r.method.name() == name)
            .unwrap_or_else(|| panic!("no rule for {name}"))
    }

    fn json(message: &DynamicMessage) -> serde_json::Value {
        let bytes = response_json(message, "").unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    fn refusal(rule: &Rule, bound: &[(String, String)], query: Option<&str>, body: &str) -> String {
        request(rule, bound, query, body.as_bytes())
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    #[test]
    fn query_parameters_fill_fields_with_their_types() {
        let r = rule("ListProducts");
        let message = request(
            &r,
            &[],
            Some("query=mug&page_size=2&min_price_minor=100"),
            b"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let value = json(&message);
        assert_eq!(value["query"], "mug");
        assert_eq!(value["pageSize"], 2);
        assert_eq!(value["minPriceMinor"], "100", "int64 as a string");
        assert_eq!(
            refusal(&r, &[], Some("page_size=lots"), ""),
            "page_size must be a 32-bit integer, not \"lots\""
        );
        assert_eq!(
            refusal(&r, &[], Some("colour=red"), ""),
            "colour is not a field of ListProductsRequest"
        );
    }

    #[test]
    fn a_field_body_and_a_nested_path_variable_meet_in_one_message() {
        let r = rule("UpdateProduct");
        let bound = [("product.product_id".to_owned(), "p1".to_owned())];
        let message = request(
            &r,
            &bound,
            None,
            br#"{"name":"Mug","price":{"amountMinor":"5","currency":"EUR"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let value = json(&message);
        assert_eq!(value["product"]["productId"], "p1");
        assert_eq!(value["product"]["name"], "Mug");
        assert_eq!(value["product"]["price"]["amountMinor"], "5");
    }

    fn mask(message: &DynamicMessage) -> Option<Vec<String>> {
        let Value::Message(mask) = message.get_field_by_name("update_mask")?.into_owned() else {
            return None;
        };
        let Value::List(paths) = mask.get_field_by_name("paths")?.into_owned() else {
            return None;
        };
        let paths: Vec<String> = paths
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        (!paths.is_empty()).then_some(paths)
    }

    fn patch(rule: &Rule, query: Option<&str>, body: &str) -> DynamicMessage {
        let bound = [("product.product_id".to_owned(), "p1".to_owned())];
        request(rule, &bound, query, body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_mask_from_the_query_is_passed_on_in_proto_names() {
        let r = rule("UpdateProduct");
        let body = r#"{"version":"3","stock":0,"name":"Mug"}"#;
        let message = patch(&r, Some("updateMask=stock,imageUrl"), body);
        assert_eq!(
            mask(&message),
            Some(vec!["stock".to_owned(), "image_url".to_owned()]),
            "as given, not derived from the body"
        );
        let message = patch(
            &r,
            Some("update_mask=image_url&updateMask=price.amountMinor&updateMask=bogus"),
            body,
        );
        assert_eq!(
            mask(&message),
            Some(vec![
                "image_url".to_owned(),
                "price.amount_minor".to_owned(),
                "bogus".to_owned()
            ]),
            "repeated keys add up; unknown paths are the service's to refuse"
        );
        let bound = [("product.product_id".to_owned(), "p1".to_owned())];
        for query in [
            "updateMask=",
            "updateMask=stock,,name",
            "updateMask=price..currency",
        ] {
            assert!(
                refusal(&r, &bound, Some(query), body)
                    .starts_with("updateMask must be field paths separated by commas"),
                "{query}"
            );
        }
        assert!(refusal(&r, &bound, Some("update_mask=.stock"), body).starts_with("update_mask "));
    }

    #[test]
    fn without_a_mask_a_patch_changes_the_fields_its_body_sends() {
        let r = rule("UpdateProduct");
        let message = patch(
            &r,
            None,
            r#"{"stock":0,"productId":"p1","version":"3","imageUrl":"","createTime":"2026-01-01T00:00:00Z","attributes":{}}"#,
        );
        assert_eq!(
            mask(&message),
            Some(vec![
                "image_url".to_owned(),
                "attributes".to_owned(),
                "stock".to_owned()
            ]),
            "zero values count; the path-bound id, version and server times do not"
        );
        let message = patch(&r, Some("product.name=Mug"), r#"{"version":"3"}"#);
        assert_eq!(
            mask(&message),
            Some(vec!["name".to_owned()]),
            "query keys too"
        );
        assert_eq!(mask(&patch(&r, None, r#"{"version":"3"}"#)), None);
        assert_eq!(mask(&patch(&r, None, "")), None);

        let user = rule("UpdateUser");
        let bound = [("user.user_id".to_owned(), "u1".to_owned())];
        let message = request(&user, &bound, None, br#"{"display_name":"Ann","roles":[]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            mask(&message),
            Some(vec!["display_name".to_owned(), "roles".to_owned()]),
            "proto names in the body work as well"
        );
    }

    #[test]
    fn body_errors_name_the_field() {
        let r = rule("PlaceOrder");
        assert_eq!(
            refusal(
                &r,
                &[],
                None,
                r#"{"items":[{"productId":"p","quantity":"many"}]}"#
            )
            .split(':')
            .next(),
            Some("items[0].quantity")
        );
        let unknown = refusal(
            &r,
            &[],
            None,
            r#"{"items":[{"productId":"p","unitPrice":1}]}"#,
        );
        assert!(unknown.starts_with("items[0]"), "{unknown}");
        assert!(unknown.contains("unitPrice"), "{unknown}");
        assert!(refusal(&r, &[], None, "{not json").starts_with("the body is not valid JSON"));
        let get = rule("GetOrder");
        assert!(refusal(&get, &[], None, "{}").contains("takes no body"));
    }
}
