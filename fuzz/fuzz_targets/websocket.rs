//! Feeds arbitrary bytes through the WebSocket server path of a `ws`
//! listener, without a socket: the HTTP upgrade (`listener::ws::accept`),
//! WebSocket frames, the `WsTransport` byte stream and MQTT decoding, as
//! the listener and the session run them (3.1.1 until a CONNECT names its
//! version). The bytes reach the server through a `tokio::io::duplex` pipe,
//! all at once and in two chunks, and the target checks that:
//! - nothing panics or hangs;
//! - both ways of feeding give the same packets and the same ending.
//!
//! The first input byte picks the mode, the second where to split:
//! - mode 0: the rest is the whole client stream (fuzzes the upgrade);
//! - mode 1: a valid upgrade request, then the rest raw (fuzzes frames);
//! - mode 2: a valid upgrade request, then the rest cut into masked binary
//!   frames, each a length byte and that many bytes (fuzzes MQTT bytes
//!   carried in any framing).
//!
//! Run: `cargo +nightly fuzz run websocket fuzz/seeds-websocket` from the
//! repository root (or `scripts/fuzz.sh`).

#![no_main]

use std::cell::RefCell;

use broker::codec::{Limits, Packet, ProtocolVersion};
use broker::listener::ws;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\n\
Host: localhost\r\n\
Upgrade: websocket\r\n\
Connection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\r\n";

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Small enough that fuzz inputs cross it.
const MAX_PACKET_SIZE: u32 = 512;

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime"),
    );
}

fuzz_target!(|data: &[u8]| {
    let [mode, split, rest @ ..] = data else {
        return;
    };
    let (upgrade, stream) = match mode % 3 {
        0 => (None, rest.to_vec()),
        1 => (Some(UPGRADE), rest.to_vec()),
        _ => (Some(UPGRADE), frames(rest)),
    };
    let split = *split as usize * stream.len() / 255;
    let (whole, chunked) = RUNTIME.with(|rt| {
        let rt = rt.borrow();
        (
            rt.block_on(serve(upgrade, vec![stream.clone()])),
            rt.block_on(serve(
                upgrade,
                vec![stream[..split].to_vec(), stream[split..].to_vec()],
            )),
        )
    });
    // tungstenite refuses bytes that come in the same read as the end of
    // the upgrade request ("Junk after client request"), so a client that
    // sends frames before the 101 answer (RFC 6455 4.1 says it must wait)
    // is refused or not depending on how its bytes arrive.
    let junk = |o: &Outcome| o.1.as_deref().is_some_and(|e| e.contains("Junk after"));
    if upgrade.is_none() && (junk(&whole) || junk(&chunked)) {
        return;
    }
    assert_eq!(whole, chunked, "feeding in two chunks changed the result");
});

/// `data` as masked binary frames: a length byte, then that many bytes.
fn frames(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [len, rest @ ..] = data {
        let n = (*len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        out.push(0x82); // FIN, binary
        out.push(0x80 | n as u8 & 0x7f);
        if n >= 126 {
            out.pop();
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        data = tail;
    }
    out
}

/// How one run ended: the packets decoded, and the error (as text) that
/// ended it, if any.
type Outcome = (Vec<Packet>, Option<String>);

/// Runs the server side over a pipe the client side writes into: `upgrade`
/// first if given, and then, as a client must, nothing until the server's
/// answer has arrived; then `chunks`, one write each, then end of stream.
async fn serve(upgrade: Option<&[u8]>, chunks: Vec<Vec<u8>>) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let client = async move {
        let mut answer = Vec::new();
        if let Some(upgrade) = upgrade {
            if to_server.write_all(upgrade).await.is_err() {
                return;
            }
            let mut byte = [0u8; 1];
            while !answer.ends_with(b"\r\n\r\n") {
                match from_server.read(&mut byte).await {
                    Ok(1) => answer.push(byte[0]),
                    _ => return,
                }
            }
        }
        for chunk in chunks {
            if to_server.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let _ = to_server.shutdown().await;
        let _ = from_server.read_to_end(&mut answer).await;
    };
    let serve = async move {
        let transport =
            match ws::accept(server, "/mqtt", ws::websocket_config(MAX_PACKET_SIZE)).await {
                Ok(t) => t,
                Err(e) => return (Vec::new(), Some(format!("handshake: {e}"))),
            };
        decode_all(transport).await
    };
    let ((), outcome) = tokio::join!(client, serve);
    outcome
}

/// Reads and decodes packets until the end of the stream or an error, as
/// the listener and session do.
async fn decode_all<R: tokio::io::AsyncRead + Unpin>(mut reader: R) -> Outcome {
    let mut limits = Limits {
        max_packet_size: MAX_PACKET_SIZE,
        version: ProtocolVersion::V311,
        refuse_control_characters: true,
    };
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    loop {
        loop {
            match Packet::decode(&mut buf, &limits) {
                Ok(Some(packet)) => {
                    if let Packet::Connect(c) = &packet {
                        limits.version = c.protocol;
                    }
                    packets.push(packet);
                }
                Ok(None) => break,
                Err(e) => return (packets, Some(format!("decode: {e}"))),
            }
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return (packets, None),
            Ok(_) => {}
            Err(e) => return (packets, Some(format!("read: {e}"))),
        }
    }
}
