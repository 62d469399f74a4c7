use proptest::prelude::*;

use super::*;

fn p(s: &str) -> Pattern {
    s.parse().unwrap()
}

fn t(s: &str) -> TopicName {
    s.parse().unwrap()
}

#[test]
fn wildcard_semantics_table() {
    // (pattern, topic, matches)
    let table = [
        // exact
        ("sensors.kitchen.temp", "sensors.kitchen.temp", true),
        ("sensors.kitchen.temp", "sensors.kitchen", false),
        ("sensors.kitchen", "sensors.kitchen.temp", false),
        // `*`: exactly one segment
        ("sensors.*.temp", "sensors.kitchen.temp", true),
        ("sensors.*.temp", "sensors.garage.temp", true),
        ("sensors.*.temp", "sensors.temp", false),
        ("sensors.*.temp", "sensors.a.b.temp", false),
        ("sensors.*.temp", "sensors.kitchen.humidity", false),
        ("sensors.*", "sensors", false),
        ("sensors.*", "sensors.kitchen", true),
        ("sensors.*", "sensors.kitchen.temp", false),
        ("*", "sensors", true),
        ("*", "sensors.kitchen", false),
        ("*.*", "a.b", true),
        // `#`: zero or more trailing segments
        ("sensors.#", "sensors", true),
        ("sensors.#", "sensors.kitchen", true),
        ("sensors.#", "sensors.kitchen.temp", true),
        ("sensors.#", "sensorsx.kitchen", false),
        ("sensors.#", "other.sensors", false),
        ("#", "anything.at.all", true),
        ("*.#", "a", true),
        ("*.kitchen.#", "sensors.kitchen.temp", true),
        ("*.kitchen.#", "sensors.garage.temp", false),
        // case-sensitive literals
        ("Sensors.#", "sensors.kitchen", false),
    ];
    for (pattern, topic, expected) in table {
        assert_eq!(
            p(pattern).matches(&t(topic)),
            expected,
            "{pattern} vs {topic}"
        );
    }
}

#[test]
fn overlapping_patterns_both_match() {
    let topic = t("sensors.kitchen.temp");
    let both = [p("sensors.#"), p("sensors.*.temp")];
    assert!(both.iter().all(|p| p.matches(&topic)));
    assert_eq!(
        both.iter()
            .filter(|p| p.matches(&t("sensors.kitchen")))
            .count(),
        1
    );
}

#[test]
fn invalid_names_have_clear_errors() {
    let cases: [(&str, TopicError); 9] = [
        ("", TopicError::Empty),
        ("a..b", TopicError::EmptySegment),
        (".a", TopicError::EmptySegment),
        ("a.", TopicError::EmptySegment),
        ("a b", TopicError::InvalidChar(' ')),
        ("a/b", TopicError::InvalidChar('/')),
        ("a.*", TopicError::MisplacedWildcard('*')),
        ("a.#", TopicError::MisplacedWildcard('#')),
        ("sens*", TopicError::MisplacedWildcard('*')),
    ];
    for (s, e) in cases {
        assert_eq!(s.parse::<TopicName>(), Err(e), "{s:?}");
    }
    assert_eq!(
        "a".repeat(64).parse::<TopicName>(),
        Err(TopicError::SegmentTooLong(64))
    );
    let long = vec!["a"; 129].join(".");
    assert_eq!(long.parse::<TopicName>(), Err(TopicError::TooLong(257)));
    assert_eq!("#.a".parse::<Pattern>(), Err(TopicError::HashNotLast));
    assert_eq!(
        "a.b#".parse::<Pattern>(),
        Err(TopicError::MisplacedWildcard('#'))
    );
    assert!("a.*.#".parse::<Pattern>().is_ok());
    let msg = "a..b".parse::<TopicName>().unwrap_err().to_string();
    assert!(msg.contains("empty segment"), "{msg}");
}

#[test]
fn realms_validated() {
    assert!("org.example.home".parse::<Realm>().is_ok());
    assert_eq!("example".parse::<Realm>(), Err(RealmError::Labels));
    assert_eq!("a..b".parse::<Realm>(), Err(RealmError::Labels));
    assert_eq!(
        "Org.example".parse::<Realm>(),
        Err(RealmError::InvalidChar('O'))
    );
    assert_eq!(
        "org/x.y".parse::<Realm>(),
        Err(RealmError::InvalidChar('/'))
    );
    assert_eq!("-a.b".parse::<Realm>(), Err(RealmError::Hyphen));
    assert_eq!(
        format!("a.{}", "b".repeat(64)).parse::<Realm>(),
        Err(RealmError::LabelTooLong(64))
    );
}

#[test]
fn wire_topics_scope_by_realm() {
    let (a, b): (Realm, Realm) = ("org.a".parse().unwrap(), "org.b".parse().unwrap());
    let name = t("chat.room1");
    assert_eq!(wire_topic(&a, &name).as_str(), "org.a/chat.room1");
    assert_ne!(wire_topic(&a, &name), wire_topic(&b, &name));
    assert_eq!(
        parse_wire_topic("org.a/chat.room1"),
        Some(WireTopic::Topic(a.clone(), name))
    );
    assert_eq!(
        parse_wire_topic(wire_pattern(&a, &p("chat.#")).as_str()),
        Some(WireTopic::Pattern(a, p("chat.#")))
    );
    // Plain gossipsub topics are not ours.
    assert_eq!(parse_wire_topic("meshwire/test"), None);
    assert_eq!(parse_wire_topic("chat"), None);
    assert_eq!(parse_wire_topic("org.a/bad topic"), None);
}

fn segment() -> impl Strategy<Value = String> {
    "[a-c]{1,2}"
}

fn topic_strategy() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 1..6)
}

/// A reference matcher: recursive, on segment lists.
fn reference(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.first(), topic.first()) {
        (Some(&"#"), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(&"*"), Some(_)) => reference(&pattern[1..], &topic[1..]),
        (Some(l), Some(s)) => l == s && reference(&pattern[1..], &topic[1..]),
    }
}

proptest! {
    #[test]
    fn a_topic_matches_itself_and_hash_patterns_of_its_prefixes(segs in topic_strategy()) {
        let name = t(&segs.join("."));
        prop_assert!(p(name.as_str()).matches(&name));
        for k in 0..segs.len() {
            let prefix = segs[..k].iter().map(String::as_str).chain(["#"]).collect::<Vec<_>>();
            prop_assert!(p(&prefix.join(".")).matches(&name));
        }
        // `*` in place of any one segment.
        for k in 0..segs.len() {
            let mut s = segs.clone();
            s[k] = "*".into();
            prop_assert!(p(&s.join(".")).matches(&name));
        }
    }

    #[test]
    fn matching_agrees_with_a_reference(
        pat in prop::collection::vec(prop_oneof![segment(), Just("*".to_string())], 0..5),
        hash in any::<bool>(),
        topic in topic_strategy(),
    ) {
        let mut pat = pat;
        if hash || pat.is_empty() {
            pat.push("#".into());
        }
        let refs: Vec<&str> = pat.iter().map(String::as_str).collect();
        let tops: Vec<&str> = topic.iter().map(String::as_str).collect();
        prop_assert_eq!(
            p(&pat.join(".")).matches(&t(&topic.join("."))),
            reference(&refs, &tops)
        );
    }

    #[test]
    fn parsing_never_panics(s in ".{0,300}") {
        let _ = s.parse::<TopicName>();
        let _ = s.parse::<Pattern>();
        let _ = s.parse::<Realm>();
        let _ = parse_wire_topic(&s);
    }
}
