//! AMQP topic matching: words split on `.`, `*` matches one word, `#` zero or more.

pub(crate) fn matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    match_words(&pattern, &key)
}

fn match_words(pattern: &[&str], key: &[&str]) -> bool {
    match (pattern.split_first(), key.split_first()) {
        (None, None) => true,
        (Some((&"#", rest)), _) => {
            match_words(rest, key) || (!key.is_empty() && match_words(pattern, &key[1..]))
        }
        (Some((&"*", rest)), Some((_, key_rest))) => match_words(rest, key_rest),
        (Some((word, rest)), Some((key_word, key_rest))) => {
            word == key_word && match_words(rest, key_rest)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn topic_patterns_match_as_rabbitmq_does() {
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.cancelled"));
        assert!(matches("order.*", "order.cancelled"));
        assert!(!matches("order.*", "order.item.added"));
        assert!(matches("order.#", "order.item.added"));
        assert!(matches("order.#", "order"));
        assert!(matches("#", "payment.succeeded"));
        assert!(matches("*.succeeded", "payment.succeeded"));
        assert!(!matches("*.succeeded", "payment.failed"));
    }
}
