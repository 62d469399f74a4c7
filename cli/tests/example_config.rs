//! `cli/meshwire.example.toml` is a valid config and documents every key the schema has.

use meshwire_cli::config::{self, Source};

const EXAMPLE: &str = include_str!("../meshwire.example.toml");

/// The names the parser accepts where `probe` is unknown (from its "expected one of" list).
fn accepted(probe: &str) -> Vec<String> {
    let err = config::parse(&Source {
        path: "probe.toml".into(),
        text: probe.into(),
    })
    .unwrap_err()
    .to_string();
    // "expected one of `a`, `b`, `c`" or "expected `a` or `b`".
    let list = err
        .split(", expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let list = list.strip_prefix("one of ").unwrap_or(list);
    list.split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect()
}

#[test]
fn example_config_parses() {
    let table = config::parse(&Source {
        path: "meshwire.example.toml".into(),
        text: EXAMPLE.into(),
    })
    .unwrap();
    let c = config::finish(table).unwrap();
    assert_eq!(c.node.listen, ["/ip4/0.0.0.0/udp/4001/quic-v1"]);
}

#[test]
fn example_config_documents_every_key() {
    let sections = accepted("[no_such_section]\n");
    assert!(sections.len() >= 12, "{sections:?}");
    let mut keys = 0;
    for section in sections {
        let header = format!("[{section}]");
        let body = EXAMPLE
            .split(&header)
            .nth(1)
            .unwrap_or_else(|| panic!("no {header} in the example"));
        let body = body.split("\n[").next().unwrap_or_default();
        for key in accepted(&format!("{header}\nno_such_key = 1\n")) {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            let table = format!("\n[{section}.{key}]\n");
            if EXAMPLE.contains(&table) {
                // A scope table (`[resources.peer]`): its keys are the scope keys, listed
                // once in the section's comment and shown in `[resources.system]`.
                let scope_keys = accepted(&format!("[{section}.{key}]\nno_such_key = 1\n"));
                for k in scope_keys {
                    assert!(body.contains(&k), "{section}.{key}.{k} is not documented");
                    keys += 1;
                }
                continue;
            }
            assert!(
                body.contains(&set) || body.contains(&commented),
                "{section}.{key} is not documented in meshwire.example.toml"
            );
            keys += 1;
        }
    }
    assert!(keys >= 170, "only {keys} keys");
}
