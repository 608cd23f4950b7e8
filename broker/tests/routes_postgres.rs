//! PostgreSQL routes end to end: messages published over MQTT to a real
//! `tern` arrive as rows in a real PostgreSQL 15 (`common::pg`); the
//! database down for a while (error event, messages wait, none lost),
//! `kill -9` of tern with a backlog, and a poison message in the dead
//! letter topic.

mod common;

use std::collections::BTreeSet;

use common::hub::{next_json, publish_acked, sys_subscriber, POLL};
use common::pg::{pg_route, PgServer, PASSWORD};
use common::process::{free_port, TernProcess};
use common::{build, poll_until, Raw, TestBroker, PATIENCE};

/// Rows with every field, idempotent on (uid, seq) as README advises.
const TABLE: &str = "CREATE TABLE readings (uid bigint, seq bigint, topic text, payload bytea, \
                     qos smallint, retain boolean, client_id text, at timestamptz, \
                     UNIQUE (uid, seq))";
const INSERT: &str = "INSERT INTO readings VALUES ($UID, $SEQ, $TOPIC, $PAYLOAD, $QOS, $RETAIN, \
                      $CLIENT_ID, $TIMESTAMP) ON CONFLICT (uid, seq) DO NOTHING";

async fn payloads(server: &PgServer) -> Vec<String> {
    server
        .client()
        .await
        .query(
            "SELECT convert_from(payload, 'UTF8') FROM readings ORDER BY at, seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn wait_for_rows(server: &PgServer, n: usize) -> bool {
    poll_until(PATIENCE, POLL, async || {
        // The server may be restarting: a failed query is "not yet".
        match tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres password={PASSWORD}",
                server.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                let count: Option<i64> = client
                    .query_one("SELECT count(*) FROM readings", &[])
                    .await
                    .ok()
                    .map(|r| r.get(0));
                count.is_some_and(|c| c >= n as i64)
            }
            Err(_) => false,
        }
    })
    .await
}

#[tokio::test]
async fn published_messages_arrive_as_rows_with_every_field() {
    let server = PgServer::start();
    server.client().await.batch_execute(TABLE).await.unwrap();
    let route = pg_route("rows", "plant/#", &server, INSERT, serde_json::json!({}));
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);

    let mut p = Raw::mqtt(broker.addr, "sensor-'1'", true).await;
    let evil = "'); DROP TABLE readings; --";
    publish_acked(&mut p, "plant/a/temp", 1, b"21.5").await;
    publish_acked(&mut p, "plant/b/note", 2, evil.as_bytes()).await;
    p.send(&build::publish("plant/c/temp", 0, true, false, 0, b"q0"))
        .await;
    p.send(&build::publish(
        "other/topic",
        0,
        false,
        false,
        0,
        b"not routed",
    ))
    .await;

    assert!(
        wait_for_rows(&server, 3).await,
        "rows: {:?}",
        payloads(&server).await
    );
    let rows = server
        .client()
        .await
        .query(
            "SELECT topic, payload, qos, retain, client_id, \
             extract(epoch FROM now() - at)::float8 FROM readings ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let expected = [
        ("plant/a/temp", "21.5", 1i16, false),
        ("plant/b/note", evil, 1, false),
        ("plant/c/temp", "q0", 0, true),
    ];
    for (row, (topic, payload, qos, retain)) in rows.iter().zip(expected) {
        assert_eq!(row.get::<_, String>(0), topic);
        assert_eq!(row.get::<_, Vec<u8>>(1), payload.as_bytes());
        assert_eq!(row.get::<_, i16>(2), qos);
        assert_eq!(row.get::<_, bool>(3), retain);
        assert_eq!(row.get::<_, String>(4), "sensor-'1'");
        let age: f64 = row.get(5);
        assert!((0.0..60.0).contains(&age), "received {age} s ago");
    }
}

#[tokio::test]
async fn database_down_messages_wait_with_an_error_event_and_none_is_lost() {
    let mut server = PgServer::start();
    server.client().await.batch_execute(TABLE).await.unwrap();
    let route = pg_route("pg-down", "d/#", &server, INSERT, serde_json::json!({}));
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut events = sys_subscriber(broker.addr, "ops", &["$SYS/events/#"]).await;
    server.stop();

    let mut p = Raw::mqtt(broker.addr, "dev", true).await;
    let n = 40u16;
    for i in 1..=n {
        publish_acked(
            &mut p,
            &format!("d/{}", i % 4),
            i,
            format!("m{i}").as_bytes(),
        )
        .await;
    }
    let (topic, error) = next_json(&mut events, "$SYS/events/error/route/").await;
    assert_eq!(topic, "$SYS/events/error/route/pg-down");
    assert_eq!(error["object_id"], "pg-down");
    let text = error["details"]["error"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port)),
        "{error}"
    );

    server.start_again();
    assert!(wait_for_rows(&server, n as usize).await);
    let (topic, _) = next_json(&mut events, "$SYS/events/info/route/").await;
    assert_eq!(topic, "$SYS/events/info/route/pg-down");
    let got: BTreeSet<String> = payloads(&server).await.into_iter().collect();
    let expected: BTreeSet<String> = (1..=n).map(|i| format!("m{i}")).collect();
    assert_eq!(
        got, expected,
        "every message, once (the unique key drops replays)"
    );
    // Per topic, in publish order: the queue position increases with the
    // publish order within a topic.
    let rows = server
        .client()
        .await
        .query(
            "SELECT topic, convert_from(payload, 'UTF8') FROM readings ORDER BY at, seq",
            &[],
        )
        .await
        .unwrap();
    for t in 0..4 {
        let order: Vec<u16> = rows
            .iter()
            .filter(|r| r.get::<_, String>(0) == format!("d/{t}"))
            .map(|r| r.get::<_, String>(1)[1..].parse().unwrap())
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "topic d/{t}");
    }
}

#[tokio::test]
async fn a_backlog_survives_kill_9_and_reaches_the_database_after_restart() {
    let mut server = PgServer::start();
    server.client().await.batch_execute(TABLE).await.unwrap();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[routes]]\nname = \"pg-backlog\"\ntopic = \"k/#\"\ntype = \"postgres\"\n\
             url = {:?}\npassword = {PASSWORD:?}\nquery = {INSERT:?}\n\
             backoff_initial_ms = 20\nbackoff_max_ms = 200\nmax_attempts = 100000\n",
            server.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let port = free_port();
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let mut p = Raw::mqtt(tern.addr, "pub", true).await;
    let n = 60u16;
    for i in 1..=n {
        publish_acked(
            &mut p,
            &format!("k/{}", i % 5),
            i,
            format!("b{i}").as_bytes(),
        )
        .await;
    }
    tern.kill9();

    server.start_again();
    let tern = TernProcess::start(&data, port, &["--config", &config]);
    let all = wait_for_rows(&server, n as usize).await;
    let got: BTreeSet<String> = payloads(&server).await.into_iter().collect();
    let expected: BTreeSet<String> = (1..=n).map(|i| format!("b{i}")).collect();
    assert!(
        all && got == expected,
        "got {got:?}\nlog:\n{}",
        tern.log_text()
    );
    tern.kill9();
}

#[tokio::test]
async fn a_row_the_database_refuses_goes_to_the_dead_letter_topic_alone() {
    let server = PgServer::start();
    server
        .client()
        .await
        .batch_execute("CREATE TABLE temps (seq bigint, celsius real CHECK (celsius > -273.15))")
        .await
        .unwrap();
    let route = pg_route(
        "temps",
        "t/#",
        &server,
        "INSERT INTO temps VALUES ($SEQ, $PAYLOAD::text::real)",
        serde_json::json!({}),
    );
    let broker = TestBroker::start_with(|c| c.routes = vec![route]);
    let mut dead = sys_subscriber(broker.addr, "ops", &["$SYS/routes/+/dead"]).await;
    let mut p = Raw::mqtt(broker.addr, "thermo", true).await;
    publish_acked(&mut p, "t/1", 1, b"20.5").await;
    publish_acked(&mut p, "t/1", 2, b"-300").await;
    publish_acked(&mut p, "t/1", 3, b"21").await;

    let (topic, letter) = next_json(&mut dead, "$SYS/routes/").await;
    assert_eq!(topic, "$SYS/routes/temps/dead");
    assert_eq!(letter["topic"], "t/1");
    assert_eq!(letter["client_id"], "thermo");
    assert_eq!(letter["attempts"], 1, "a data error is not retried");
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.contains("23514") && error.contains("temps_celsius_check"),
        "{letter}"
    );
    let stored = poll_until(PATIENCE, POLL, async || {
        let rows = server
            .client()
            .await
            .query("SELECT celsius FROM temps ORDER BY seq", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<_, f32>(0)).collect::<Vec<_>>() == [20.5, 21.0]
    })
    .await;
    assert!(stored, "the messages around the poison one are stored");
}
