//! B3 trace context, as Istio's Envoy sidecars and Zipkin-era clients send it: the single `b3`
//! header (`{trace}-{span}[-{sampled}[-{parent}]]`) or the multi-header form (`X-B3-TraceId`,
//! `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`). Injected as the single header beside W3C's.

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator, text_map_propagator::FieldIter},
    trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};

const SINGLE: &str = "b3";
const TRACE_ID: &str = "x-b3-traceid";
const SPAN_ID: &str = "x-b3-spanid";
const SAMPLED: &str = "x-b3-sampled";
const FLAGS: &str = "x-b3-flags";

#[derive(Debug, Clone)]
pub struct B3Propagator {
    fields: [String; 5],
}

impl Default for B3Propagator {
    fn default() -> Self {
        Self {
            fields: [SINGLE, TRACE_ID, SPAN_ID, SAMPLED, FLAGS].map(str::to_owned),
        }
    }
}

fn trace_id(hex: &str) -> Option<TraceId> {
    // 64-bit ids are widened to 128 bits by left-padding, as the B3 spec says.
    let id = match hex.len() {
        16 => TraceId::from_hex(&format!("{hex:0>32}")).ok()?,
        32 => TraceId::from_hex(hex).ok()?,
        _ => return None,
    };
    (id != TraceId::INVALID).then_some(id)
}

fn span_id(hex: &str) -> Option<SpanId> {
    let id = (hex.len() == 16)
        .then(|| SpanId::from_hex(hex).ok())
        .flatten()?;
    (id != SpanId::INVALID).then_some(id)
}

/// `1`/`d` (debug) sample, `0` does not; absent means the receiver decides (we sample).
fn sampled(flag: Option<&str>) -> Option<TraceFlags> {
    match flag {
        None | Some("1" | "d" | "true") => Some(TraceFlags::SAMPLED),
        Some("0" | "false") => Some(TraceFlags::default()),
        Some(_) => None,
    }
}

fn remote(trace: TraceId, span: SpanId, flags: TraceFlags) -> SpanContext {
    SpanContext::new(trace, span, flags, true, TraceState::default())
}

fn single(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let flags = sampled(parts.next())?;
    Some(remote(trace, span, flags))
}

fn multi(extractor: &dyn Extractor) -> Option<SpanContext> {
    let trace = trace_id(extractor.get(TRACE_ID)?.trim())?;
    let span = span_id(extractor.get(SPAN_ID)?.trim())?;
    let flags = if extractor.get(FLAGS).map(str::trim) == Some("1") {
        TraceFlags::SAMPLED
    } else {
        sampled(extractor.get(SAMPLED).map(str::trim))?
    };
    Some(remote(trace, span, flags))
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let context = span.span_context();
        if !context.is_valid() {
            return;
        }
        let sampled = if context.is_sampled() { "1" } else { "0" };
        injector.set(
            SINGLE,
            format!("{}-{}-{sampled}", context.trace_id(), context.span_id()),
        );
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let found = extractor
            .get(SINGLE)
            .and_then(single)
            .or_else(|| multi(extractor));
        match found {
            Some(context) => cx.with_remote_span_context(context),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(headers: &[(&str, &str)]) -> SpanContext {
        let carrier: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        B3Propagator::default()
            .extract(&carrier)
            .span()
            .span_context()
            .clone()
    }

    #[test]
    fn the_single_header_is_read() {
        let context = extract(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        assert!(context.is_valid() && context.is_remote() && context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(context.span_id().to_string(), "e457b5a2e4d86bd1");
    }

    #[test]
    fn the_multi_headers_are_read_and_short_ids_widened() {
        let context = extract(&[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]);
        assert!(context.is_valid() && !context.is_sampled());
        assert_eq!(
            context.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
    }

    #[test]
    fn malformed_or_missing_ids_are_ignored() {
        for headers in [
            vec![("b3", "not-an-id")],
            vec![("b3", "0")],
            vec![("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")],
            vec![],
        ] {
            assert!(!extract(&headers).is_valid(), "{headers:?}");
        }
    }

    #[test]
    fn injection_writes_the_single_header() {
        let context = remote(
            TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("e457b5a2e4d86bd1").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
        );
        let mut carrier = HashMap::new();
        B3Propagator::default().inject_context(
            &Context::new().with_remote_span_context(context),
            &mut carrier,
        );
        assert_eq!(
            carrier.get("b3").map(String::as_str),
            Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
        );
    }
}
