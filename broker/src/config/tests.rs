use super::*;

#[test]
fn node_id_from_statefulset_hostname_is_ordinal_plus_one() {
    for (hostname, id) in [
        ("tern-0", 1),
        ("tern-2", 3),
        ("my-tern-release-41", 42),
        ("tern-2.tern-headless.default.svc.cluster.local", 3),
        ("tern-007\n", 8),
    ] {
        assert_eq!(node_id_from_hostname(hostname).unwrap(), id, "{hostname}");
    }
}

#[test]
fn node_id_from_hostname_without_ordinal_is_an_error_naming_it() {
    for hostname in [
        "tern",
        "tern-",
        "-3",
        "tern-a",
        "tern-1x",
        "tern-+1",
        "",
        "tern-18446744073709551615",
    ] {
        let e = node_id_from_hostname(hostname).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{hostname}`")) && e.contains("cluster.node_id"),
            "{hostname}: {e}"
        );
    }
}

#[test]
fn derive_node_id_applies_only_when_asked_and_not_with_an_explicit_id() {
    let mut c = Config::from_toml("[cluster]\nnode_id_from_hostname = true\n").unwrap();
    c.derive_node_id(|| Ok("tern-4".into())).unwrap();
    assert_eq!(c.cluster.node_id, 5);

    let mut plain = Config::default();
    plain
        .derive_node_id(|| panic!("hostname read without the option"))
        .unwrap();
    assert_eq!(plain.cluster.node_id, 0);

    let mut both =
        Config::from_toml("[cluster]\nnode_id = 2\nnode_id_from_hostname = true\n").unwrap();
    let e = both.derive_node_id(|| Ok("tern-0".into())).unwrap_err();
    assert!(e.to_string().contains("cluster.node_id"), "{e}");

    let mut unreadable = Config::from_toml("[cluster]\nnode_id_from_hostname = true\n").unwrap();
    let e = unreadable
        .derive_node_id(|| Err(std::io::Error::other("no /proc")))
        .unwrap_err();
    assert!(e.to_string().contains("no /proc"), "{e}");
}

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn full_file_is_read() {
    let c = Config::from_toml(
        r#"
        data_dir = "/var/lib/tern"
        log_level = "debug"
        log_format = "json"
        workers = 3
        [[listeners]]
        bind = "127.0.0.1:1884"
        protocol = "tcp"
        max_connections = 10
        [mqtt]
        max_packet_size = 2048
        max_inflight = 10
        max_queued_messages = 5
        max_write_buffer = 4096
        connect_timeout_secs = 3
        max_keep_alive = 60
        client_id_prefix = "x-"
        [storage]
        cache_mb = 8
        "#,
    )
    .unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/tern"));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.listeners[0].bind, "127.0.0.1:1884".parse().unwrap());
    assert_eq!(c.mqtt.max_packet_size, 2048);
    assert_eq!(c.mqtt.client_id_prefix, "x-");
    assert_eq!(c.storage.cache_mb, 8);
    assert_eq!(c.worker_count(), 3);
}

#[test]
fn cluster_section_is_read_and_checked() {
    let c = Config::from_toml(
        r#"
        [cluster]
        node_id = 2
        listen = "127.0.0.1:7002"
        seeds = ["1=127.0.0.1:7001", "2=127.0.0.1:7002"]
        tick_ms = 20
        forward_queue_limit = 500
        "#,
    )
    .unwrap();
    assert_eq!(c.cluster.node_id, 2);
    assert_eq!(c.cluster.seeds.len(), 2);
    assert_eq!(c.cluster.forward_queue_limit, 500);
    let err = Config::from_toml("[cluster]\nforward_queue_limit = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("cluster.forward_queue_limit"),
        "{err}"
    );
    let err = Config::from_toml("[cluster]\nseeds = [\"nope\"]\n").unwrap_err();
    assert!(err.to_string().contains("cluster.seeds"), "{err}");
}

#[test]
fn backpressure_keys_are_read_and_checked() {
    let c = Config::from_toml("[limits]\nbackpressure_queued = 50\nbackpressure_wait_secs = 2\n")
        .unwrap();
    assert_eq!(c.backpressure_wait_ms(), Some(2000));
    let off = Config::from_toml("[limits]\nbackpressure_queued = 0\n").unwrap();
    assert_eq!(off.backpressure_wait_ms(), None);
    let err = Config::from_toml("[limits]\nbackpressure_wait_secs = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("limits.backpressure_wait_secs"),
        "{err}"
    );
    // in a cluster, a forwarded message's answer must not time out first
    let c = Config::from_toml(
        "[limits]\nbackpressure_wait_secs = 10\n[cluster]\nnode_id = 1\nforward_timeout_secs = 6\n",
    )
    .unwrap();
    assert_eq!(c.backpressure_wait_ms(), Some(3000));
}

#[test]
fn security_sections_are_read() {
    let c = Config::from_toml(
        r#"
        [auth]
        allow_anonymous = false
        password_file = "/etc/tern/passwd"
        use_identity_as_username = true
        jwt = { algorithm = "RS256", public_key_file = "/etc/tern/jwt.pem", username_claim = "device" }
        [acl]
        file = "/etc/tern/acl"
        [limits]
        max_connect_rate = 10
        connect_burst = 20
        max_topic_levels = 16
        max_topic_length = 256
        max_publish_rate = 100
        publish_burst = 200
        max_queued_bytes = 1000000
        slow_consumer_timeout_secs = 0
        "#,
    )
    .unwrap();
    assert!(!c.auth.allow_anonymous);
    let jwt = c.auth.jwt.unwrap();
    assert_eq!(jwt.algorithm, JwtAlgorithm::RS256);
    assert_eq!(jwt.username_claim, "device");
    assert_eq!(c.acl.file, Some(PathBuf::from("/etc/tern/acl")));
    assert_eq!(c.limits.max_topic_levels, 16);
    assert_eq!(c.limits.slow_consumer_timeout(), None);
    // defaults keep the broker open and unlimited by rates
    let d = Config::default();
    assert!(d.auth.allow_anonymous && d.auth.password_file.is_none() && d.acl.file.is_none());
    assert_eq!(d.limits.max_connect_rate, 0);
}

#[test]
fn bad_security_values_name_their_key() {
    for (text, key) in [
        ("[auth]\njwt = { algorithm = \"HS256\" }", "auth.jwt.secret"),
        (
            "[auth]\njwt = { algorithm = \"RS256\" }",
            "auth.jwt.public_key_file",
        ),
        (
            "[auth]\njwt = { algorithm = \"ES256\", secret = \"x\" }",
            "ES256",
        ),
        ("[limits]\nmax_topic_levels = 0", "limits.max_topic_levels"),
        (
            "[limits]\nmax_topic_length = 70000",
            "limits.max_topic_length",
        ),
        ("[acl]\nfiel = \"x\"", "fiel"),
    ] {
        let e = Config::from_toml(text).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn unknown_key_is_named() {
    let e = Config::from_toml("[mqtt]\nmax_inflite = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_inflite"), "{e}");
}

#[test]
fn wrong_type_names_key_and_value() {
    let e = Config::from_toml("[mqtt]\nmax_inflight = \"many\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_inflight") && e.contains("many"), "{e}");
}

#[test]
fn out_of_range_value_is_named() {
    let e = Config::from_toml("[mqtt]\nmax_inflight = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mqtt.max_inflight") && e.contains("at least 1"),
        "{e}"
    );
    let e = Config::from_toml("[mqtt]\nmax_inflight = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_inflight"), "{e}");
}

#[test]
fn bad_address_is_named() {
    let e = Config::from_toml("[[listeners]]\nbind = \"localhost\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bind"), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = Config::from_file(Path::new("/nonexistent/tern.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/tern.toml"), "{e}");
}
