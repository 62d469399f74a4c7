use super::*;

fn src(text: &str) -> Source {
    Source {
        path: "node.toml".into(),
        text: text.into(),
    }
}

#[test]
fn durations_parse_with_units_and_refuse_the_rest() {
    assert_eq!(
        "250ms".parse::<Dur>().unwrap().0,
        Duration::from_millis(250)
    );
    assert_eq!("30s".parse::<Dur>().unwrap().0, Duration::from_secs(30));
    assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
    assert_eq!("2h".parse::<Dur>().unwrap().0, Duration::from_secs(7200));
    for bad in ["", "30", "s", "1.5s", "-1s", "10 s", "3d"] {
        assert!(bad.parse::<Dur>().is_err(), "{bad}");
    }
}

#[test]
fn unknown_key_names_file_line_key_and_accepted_keys() {
    let err = parse(&src("[node]\nlisten = []\n\n[connmgr]\nlow_watr = 5\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("node.toml:5:1: connmgr.low_watr: unknown field `low_watr`, expected one of `low_water`, `high_water`"), "{err}");
    assert!(!err.contains('\n'));
}

#[test]
fn wrong_type_names_line_key_and_expected_type() {
    let err = parse(&src("[kad]\nk = \"twenty\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("node.toml:2:5: kad.k: invalid type: string \"twenty\", expected"),
        "{err}"
    );
    let err = parse(&src("[swim]\nprobe_interval = \"1 sec\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("swim.probe_interval: invalid duration \"1 sec\""),
        "{err}"
    );
    let err = parse(&src("[kad]\nmode = \"both\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kad.mode: unknown variant `both`, expected `server` or `client`"),
        "{err}"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let err = parse(&src("[node]\nlisten = [\"/ip4/1.2.3.4\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("node.toml:"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn overrides_replace_file_values_and_are_checked() {
    let mut t = parse(&src("[kad]\nk = 20\n")).unwrap();
    apply_env(
        &mut t,
        [
            ("MESHWIRE__KAD__K".to_string(), "30".to_string()),
            (
                "MESHWIRE__RELAY_SERVER__MAX_RESERVATIONS".to_string(),
                "7".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ],
    )
    .unwrap();
    set(&mut t, "swim.probe_interval", "200ms", "--set").unwrap();
    let c = finish(t).unwrap();
    assert_eq!(c.kad.k, Some(30));
    assert_eq!(c.relay_server.max_reservations, Some(7));
    assert_eq!(c.swim.probe_interval, Some(Dur(Duration::from_millis(200))));

    let mut t = toml::Table::new();
    let err = apply_env(&mut t, [("MESHWIRE__KAD__KK".to_string(), "3".to_string())])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("MESHWIRE__KAD__KK: kad.kk: unknown field `kk`"),
        "{err}"
    );
    let err = set(&mut t, "kad.k", "many", "--set kad.k=many")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("--set kad.k=many: kad.k: invalid type: string \"many\""),
        "{err}"
    );
    let err = set(&mut t, "k", "3", "--set k=3").unwrap_err().to_string();
    assert!(err.contains("is not section.key"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_line() {
    let s = src("[node]\nbootstrap = [\"/ip4/127.0.0.1/udp/1/quic-v1\"]\n");
    let c = finish(parse(&s).unwrap()).unwrap();
    let err = crate::settings::peers(&c.node.bootstrap, "node.bootstrap", &s)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "node.toml:2: node.bootstrap: \"/ip4/127.0.0.1/udp/1/quic-v1\" names no peer"
        ),
        "{err}"
    );
    let s = src("[node]\nlisten = [\"nonsense\"]\n");
    let c = finish(parse(&s).unwrap()).unwrap();
    let err = crate::settings::addrs(&c.node.listen, "node.listen", &s)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("node.toml:2: node.listen: \"nonsense\" is not a multiaddr"),
        "{err}"
    );
}
