//! The PostgreSQL sink against a real PostgreSQL 15 server started by the
//! test (`common::pg`): rows and their types, parameters never spliced,
//! batches in one transaction with a poison message rejected alone, and
//! `Retry` while the server or the table is missing.

mod common;

use std::time::Duration;

use broker::hub::postgres::{PostgresRoute, PostgresSink};
use broker::hub::sink::{DeliveryError, Outcome, RoutedMessage, Secret, Sink};
use bytes::Bytes;
use common::pg::{PgServer, PASSWORD};
use common::{poll_until, PATIENCE};

fn route(server: &PgServer, query: &str) -> PostgresRoute {
    PostgresRoute {
        url: server.url(),
        password: Some(Secret::Plain(PASSWORD.into())),
        query: query.into(),
        pool_size: 2,
        max_batch: 100,
        timeout_ms: 10_000,
    }
}

fn message(seq: u64, topic: &str, payload: &[u8]) -> RoutedMessage {
    RoutedMessage {
        seq,
        uid: 0x1000 + seq,
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: false,
        client_id: "dev-1".into(),
        // 2026-12-05T07:15:00.123Z
        timestamp_ms: 1_796_454_900_123 + seq,
    }
}

fn is_retry(outcome: &Outcome) -> bool {
    matches!(outcome, Err(DeliveryError::Retry(_)))
}

fn rejected(outcome: &Outcome) -> &str {
    match outcome {
        Err(DeliveryError::Reject(e)) => e,
        other => panic!("expected a Reject, got {other:?}"),
    }
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn every_placeholder_is_bound_in_the_type_the_server_infers() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute(
        "CREATE TABLE readings (topic text, payload bytea, qos smallint, retain boolean, \
         client_id varchar(64), at timestamptz, seq bigint, uid bigint); \
         CREATE TABLE times (seq bigint, qos integer, at_local timestamp, at_ms bigint)",
    )
    .await
    .unwrap();
    let sink = PostgresSink::new(&route(
        &server,
        "INSERT INTO readings VALUES ($TOPIC, $PAYLOAD, $QOS, $RETAIN, $CLIENT_ID, $TIMESTAMP, \
         $SEQ, $UID)",
    ))
    .unwrap();
    assert_eq!(
        sink.target(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", server.port)
    );

    // Quotes and SQL in the values are data: stored as they are.
    let evil = b"'); DROP TABLE readings; -- \\ \" $1 \x00\xff";
    let mut m = message(1, "site/'a'/temp", evil);
    m.qos = 2;
    m.retain = true;
    m.client_id = "robert'); --".into();
    m.uid = u64::MAX;
    let outcomes = sink.deliver(&[m.clone()]).await;
    assert_eq!(outcomes, vec![Ok(())]);

    let row = db
        .query_one(
            "SELECT topic, payload, qos, retain, client_id, \
             to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), seq, uid FROM readings",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "site/'a'/temp");
    assert_eq!(row.get::<_, Vec<u8>>(1), evil);
    assert_eq!(row.get::<_, i16>(2), 2);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "robert'); --");
    assert_eq!(row.get::<_, String>(5), "2026-12-05 07:15:00.124");
    assert_eq!(row.get::<_, i64>(6), 1);
    // The uid's 64 bits, read back as a signed bigint.
    assert_eq!(row.get::<_, i64>(7), -1);

    // The other types a field goes into: $QOS as integer, $TIMESTAMP as
    // timestamp (UTC) and as bigint (Unix ms).
    for query in [
        "INSERT INTO times (seq, qos, at_local) VALUES ($SEQ, $QOS, $TIMESTAMP)",
        "INSERT INTO times (seq, at_ms) VALUES ($SEQ, $TIMESTAMP)",
    ] {
        let sink = PostgresSink::new(&route(&server, query)).unwrap();
        assert_eq!(sink.deliver(&[m.clone()]).await, vec![Ok(())]);
    }
    let row = db
        .query_one(
            "SELECT max(qos), max(to_char(at_local, 'YYYY-MM-DD HH24:MI:SS.MS')), max(at_ms) FROM times",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    assert_eq!(row.get::<_, String>(1), "2026-12-05 07:15:00.124");
    assert_eq!(row.get::<_, i64>(2), 1_796_454_900_124);
}

#[tokio::test]
async fn text_and_json_payloads_refuse_what_they_cannot_hold() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute("CREATE TABLE docs (seq bigint, body text, doc jsonb, raw json)")
        .await
        .unwrap();
    let batch = [
        message(1, "d", br#"{"t": 21.5, "quote": "it's"}"#),
        message(2, "d", b"\xff\xfe not utf-8"),
        message(3, "d", b"not json"),
        message(4, "d", b"[1, 2]"),
    ];
    for column in ["body", "doc", "raw"] {
        let query = format!("INSERT INTO docs (seq, {column}) VALUES ($SEQ, $PAYLOAD)");
        let sink = PostgresSink::new(&route(&server, &query)).unwrap();
        let outcomes = sink.deliver(&batch).await;
        assert_eq!(outcomes[0], Ok(()), "{column}");
        assert!(
            rejected(&outcomes[1]).contains("$PAYLOAD is bound as text but is not UTF-8"),
            "{column}"
        );
        if column == "body" {
            assert_eq!(outcomes[2], Ok(()));
        } else {
            // 22P02: invalid input syntax for type json.
            assert!(
                rejected(&outcomes[2]).contains("22P02"),
                "{column}: {:?}",
                outcomes[2]
            );
        }
        assert_eq!(outcomes[3], Ok(()), "{column}");
    }
    let row = |seq: i64, column: &str| {
        let db = &db;
        let sql = format!("SELECT {column} FROM docs WHERE seq = $1 AND {column} IS NOT NULL");
        async move {
            db.query(&sql, &[&seq])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(row(1, "body").await, [r#"{"t": 21.5, "quote": "it's"}"#]);
    assert_eq!(row(3, "body").await, ["not json"]);
    // jsonb normalizes, json keeps the text.
    assert_eq!(row(1, "doc->>'quote'").await, ["it's"]);
    assert_eq!(row(4, "doc::text").await, ["[1, 2]"]);
    assert_eq!(row(4, "raw::text").await, ["[1, 2]"]);
    assert_eq!(row(3, "doc::text").await, Vec::<String>::new());
    assert_eq!(count(&db, "docs").await, 7);
}

#[tokio::test]
async fn a_batch_runs_in_one_transaction_and_a_poison_message_is_rejected_alone() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute(
        "CREATE TABLE t (seq bigint PRIMARY KEY, topic text, v int CHECK (v >= 0), xid bigint)",
    )
    .await
    .unwrap();
    let sink = PostgresSink::new(&route(
        &server,
        "INSERT INTO t VALUES ($SEQ, $TOPIC, $PAYLOAD::text::int, txid_current())",
    ))
    .unwrap();

    let batch: Vec<RoutedMessage> = (1..=5)
        .map(|i| message(i, "a", i.to_string().as_bytes()))
        .collect();
    assert_eq!(sink.deliver(&batch).await, vec![Ok(()); 5]);
    let xids = db.query("SELECT DISTINCT xid FROM t", &[]).await.unwrap();
    assert_eq!(xids.len(), 1, "the batch ran in one transaction");

    // The third violates the CHECK constraint (23514), the fifth is not a
    // number (22P02): each is rejected, every other message is stored, in
    // order.
    let batch: Vec<RoutedMessage> = [
        (6, "6"),
        (7, "7"),
        (8, "-8"),
        (9, "9"),
        (10, "ten"),
        (11, "11"),
    ]
    .iter()
    .map(|(seq, v)| message(*seq, "b", v.as_bytes()))
    .collect();
    let outcomes = sink.deliver(&batch).await;
    assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
    assert!(
        rejected(&outcomes[2]).contains("23514"),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[3], Ok(()));
    assert!(
        rejected(&outcomes[4]).contains("22P02"),
        "{:?}",
        outcomes[4]
    );
    assert_eq!(outcomes[5], Ok(()));
    let seqs: Vec<i64> = db
        .query("SELECT seq FROM t WHERE topic = 'b' ORDER BY xid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, vec![6, 7, 9, 11]);
}

#[tokio::test]
async fn an_idempotent_query_stores_a_redelivered_batch_once() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute("CREATE TABLE t (uid bigint, seq bigint, body bytea, UNIQUE (uid, seq))")
        .await
        .unwrap();
    let sink = PostgresSink::new(&route(
        &server,
        "INSERT INTO t VALUES ($UID, $SEQ, $PAYLOAD) ON CONFLICT (uid, seq) DO NOTHING",
    ))
    .unwrap();
    let batch: Vec<RoutedMessage> = (1..=10).map(|i| message(i, "a", b"x")).collect();
    assert_eq!(sink.deliver(&batch).await, vec![Ok(()); 10]);
    // A retry after an answer was lost: same messages, same keys.
    assert_eq!(sink.deliver(&batch[3..]).await, vec![Ok(()); 7]);
    assert_eq!(sink.deliver(&batch[9..]).await, vec![Ok(())]);
    assert_eq!(count(&db, "t").await, 10);
}

#[tokio::test]
async fn a_stopped_server_is_retry_and_delivery_resumes_when_it_is_back() {
    let mut server = PgServer::start();
    server
        .client()
        .await
        .batch_execute("CREATE TABLE t (seq bigint, body text)")
        .await
        .unwrap();
    let sink = PostgresSink::new(&route(&server, "INSERT INTO t VALUES ($SEQ, $PAYLOAD)")).unwrap();
    assert_eq!(sink.deliver(&[message(1, "a", b"one")]).await, vec![Ok(())]);

    server.stop();
    let batch = [message(2, "a", b"two"), message(3, "a", b"three")];
    let outcomes = sink.deliver(&batch).await;
    assert!(outcomes.iter().all(is_retry), "{outcomes:?}");
    // A new connection is refused too, and says where it went.
    let outcomes = sink.deliver(&batch).await;
    match &outcomes[0] {
        Err(DeliveryError::Retry(e)) => {
            assert!(e.contains(&format!("127.0.0.1:{}", server.port)), "{e}")
        }
        other => panic!("{other:?}"),
    }

    server.start_again();
    // The pool replaces the connections the restart closed: the first
    // attempt may still meet one.
    let delivered = poll_until(PATIENCE, Duration::from_millis(100), async || {
        sink.deliver(&batch).await.iter().all(Result::is_ok)
    })
    .await;
    assert!(
        delivered,
        "not delivered after the restart: {}",
        server.log()
    );
    let rows: Vec<String> = server
        .client()
        .await
        .query("SELECT body FROM t ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["one", "two", "three"]);
}

#[tokio::test]
async fn an_unreachable_server_is_retry() {
    let port = common::process::free_port();
    let config = PostgresRoute {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        password: None,
        query: "SELECT $TOPIC".into(),
        pool_size: 1,
        max_batch: 10,
        timeout_ms: 10_000,
    };
    let sink = PostgresSink::new(&config).unwrap();
    let outcomes = sink
        .deliver(&[message(1, "a", b"x"), message(2, "b", b"y")])
        .await;
    assert_eq!(outcomes.len(), 2);
    match &outcomes[1] {
        Err(DeliveryError::Retry(e)) => assert!(
            e.starts_with("cannot connect to postgres://postgres@127.0.0.1:"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_query_that_cannot_be_prepared_is_retry_until_the_table_exists() {
    let server = PgServer::start();
    let db = server.client().await;
    let sink = PostgresSink::new(&route(
        &server,
        "INSERT INTO later (seq, body) VALUES ($SEQ, $PAYLOAD)",
    ))
    .unwrap();
    let outcomes = sink.deliver(&[message(1, "a", b"x")]).await;
    match &outcomes[0] {
        // 42P01: undefined table.
        Err(DeliveryError::Retry(e)) => {
            assert!(e.contains("cannot prepare the route's query"), "{e}");
            assert!(
                e.contains("42P01") && e.contains("\"later\" does not exist"),
                "{e}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A column whose type the field cannot go into: named, and Retry too
    // (the schema, not the message, is wrong).
    db.batch_execute("CREATE TABLE later (seq text, body text)")
        .await
        .unwrap();
    let outcomes = sink.deliver(&[message(1, "a", b"x")]).await;
    match &outcomes[0] {
        Err(DeliveryError::Retry(e)) => assert!(e.contains("infers type `text` for $SEQ"), "{e}"),
        other => panic!("{other:?}"),
    }

    db.batch_execute("DROP TABLE later; CREATE TABLE later (seq bigint, body text)")
        .await
        .unwrap();
    let delivered = poll_until(PATIENCE, Duration::from_millis(100), async || {
        sink.deliver(&[message(1, "a", b"x")]).await == vec![Ok(())]
    })
    .await;
    assert!(delivered);
    assert_eq!(count(&db, "later").await, 1);
}

#[tokio::test]
async fn concurrent_batches_share_the_pool_of_pool_size_connections() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute("CREATE TABLE t (seq bigint PRIMARY KEY)")
        .await
        .unwrap();
    let sink = PostgresSink::new(&route(&server, "INSERT INTO t VALUES ($SEQ)")).unwrap();
    assert_eq!(sink.max_batch(), 100);
    let batches: Vec<Vec<RoutedMessage>> = (0..8u64)
        .map(|b| (0..50).map(|i| message(b * 100 + i, "t", b"")).collect())
        .collect();
    let results = futures::future::join_all(batches.iter().map(|batch| sink.deliver(batch))).await;
    assert!(results.iter().flatten().all(Result::is_ok));
    assert_eq!(count(&db, "t").await, 400);
    let connections: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tern'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (1..=2).contains(&connections),
        "{connections} connections, pool_size 2"
    );
}

#[tokio::test]
async fn a_batch_that_waits_past_timeout_ms_is_retry_and_its_connection_is_not_reused() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute("CREATE TABLE t (seq bigint)")
        .await
        .unwrap();
    let mut config = route(&server, "INSERT INTO t VALUES ($SEQ)");
    config.timeout_ms = 500;
    config.pool_size = 1;
    let sink = PostgresSink::new(&config).unwrap();
    assert_eq!(sink.deliver(&[message(1, "a", b"")]).await, vec![Ok(())]);

    // Another session holds a lock the insert waits for.
    let mut locker = server.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch = [message(2, "a", b""), message(3, "b", b"")];
    let outcomes = sink.deliver(&batch).await;
    for outcome in &outcomes {
        match outcome {
            Err(DeliveryError::Retry(e)) => {
                assert!(e.contains("did not answer within 500ms"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    lock.rollback().await.unwrap();

    // The pool's one connection was closed with its half-done transaction:
    // the next batch opens a new one, and nothing of the first remains.
    assert_eq!(sink.deliver(&batch).await, vec![Ok(()), Ok(())]);
    let seqs: Vec<i64> = db
        .query("SELECT seq FROM t ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[tokio::test]
async fn a_trigger_that_raises_rejects_only_its_message() {
    let server = PgServer::start();
    let db = server.client().await;
    db.batch_execute(
        "CREATE TABLE t (seq bigint, body text); \
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.body = 'spam' THEN RAISE EXCEPTION 'spam is refused'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await
    .unwrap();
    let sink = PostgresSink::new(&route(&server, "INSERT INTO t VALUES ($SEQ, $PAYLOAD)")).unwrap();
    let outcomes = sink
        .deliver(&[
            message(1, "a", b"ham"),
            message(2, "a", b"spam"),
            message(3, "a", b"eggs"),
        ])
        .await;
    assert_eq!(outcomes[0], Ok(()));
    // P0001: raise_exception.
    assert!(
        rejected(&outcomes[1]).contains("P0001: spam is refused"),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(outcomes[2], Ok(()));
    assert_eq!(count(&db, "t").await, 2);
}
