//! MQTT over WebSocket (MQTT 3.1.1 section 6, 5.0 section 6): the HTTP
//! upgrade, and a byte stream over binary messages so that the session reads
//! and writes a WebSocket connection like a TCP one.
//!
//! The handshake (tokio-tungstenite) accepts only the configured path (404
//! otherwise) and a client that offers the `mqtt` subprotocol (or the older
//! `mqttv3.1`), which the response names [MQTT-6.0.0-3]/[MQTT-6.0.0-4]; a
//! client that offers neither gets 400.
//!
//! [`WsTransport`] turns messages into bytes: MQTT bytes travel in binary
//! messages only [MQTT-6.0.0-1]; one message may hold several packets or a
//! part of one [MQTT-6.0.0-2], so the reader sees a plain byte stream and
//! the codec finds the packet boundaries. A text message is an error that
//! closes the connection. Ping and Close are answered by tungstenite. Each
//! write of the session's writer becomes one binary message. Shutting the
//! stream down runs the closing handshake: Close, then the peer's Close.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Subprotocols accepted, preferred first: `mqtt` (3.1.1, 5.0) and the 3.1
/// name `mqttv3.1`.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// WebSocket limits for a listener whose largest MQTT packet is
/// `max_packet_size`: a message may hold that and 64 KiB more (a few small
/// packets besides); a larger message closes the connection before it is
/// buffered whole.
pub fn websocket_config(max_packet_size: u32) -> WebSocketConfig {
    let max = max_packet_size as usize + 64 * 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// Reads the HTTP upgrade request from `stream`, checks the path and the
/// subprotocol, answers, and returns the MQTT byte stream.
pub async fn accept<S>(
    stream: S,
    path: &str,
    config: WebSocketConfig,
) -> Result<WsTransport<S>, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, Negotiate(path), Some(config))
        .await?;
    Ok(WsTransport::new(ws))
}

/// Checks the upgrade request (the path), and picks the subprotocol to answer with.
struct Negotiate<'a>(&'a str);

impl Callback for Negotiate<'_> {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let path = self.0;
        if request.uri().path() != path {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                format!("no MQTT endpoint at {}; use {path}", request.uri().path()),
            ));
        }
        let Some(chosen) = choose_subprotocol(request) else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "MQTT over WebSocket needs the `mqtt` subprotocol (Sec-WebSocket-Protocol: mqtt)"
                    .into(),
            ));
        };
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen),
        );
        Ok(response)
    }
}

/// The first of [`SUBPROTOCOLS`] that the request offers.
fn choose_subprotocol(request: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}

fn refusal(status: StatusCode, body: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body));
    *response.status_mut() = status;
    response
}

/// A WebSocket connection as a byte stream: binary messages in, binary
/// messages out. Works for either side (tests use it as a client).
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// The part of the last binary message not read yet.
    pending: Bytes,
    /// The peer closed, or the connection ended: reads return EOF.
    eof: bool,
    /// Our Close frame is sent (`poll_shutdown`).
    close_sent: bool,
}

impl<S> WsTransport<S> {
    pub fn new(ws: WebSocketStream<S>) -> WsTransport<S> {
        WsTransport {
            ws,
            pending: Bytes::new(),
            eof: false,
            close_sent: false,
        }
    }
}

/// A tungstenite error as an I/O error; a connection that ended (closed,
/// reset without a Close) is `None`: the end of the stream.
fn into_io(e: WsError) -> Option<io::Error> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Io(e) => Some(e),
        other => Some(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("websocket: {other}"),
        )),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTransport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(_))) => {
                    this.eof = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "websocket text message: MQTT travels in binary messages [MQTT-6.0.0-1]",
                    )));
                }
                // After a Close, polling on lets tungstenite send the answering
                // Close; then the stream ends.
                Some(Ok(
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_),
                )) => {}
                None => this.eof = true,
                Some(Err(e)) => {
                    this.eof = true;
                    if let Some(e) = into_io(e) {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTransport<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let ws = Pin::new(&mut self.ws);
        let closed = || io::Error::from(io::ErrorKind::BrokenPipe);
        ready!(ws.poll_ready(cx)).map_err(|e| into_io(e).unwrap_or_else(closed))?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(|e| into_io(e).unwrap_or_else(closed))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(|e| into_io(e).unwrap_or_else(|| io::ErrorKind::BrokenPipe.into()))
    }

    /// Sends a Close frame, flushes, and waits for the peer's Close (the
    /// closing handshake, RFC 6455 7.1.1), dropping what else it sends: a
    /// TCP close while the peer still writes its answer would reset the
    /// connection under it. Callers bound the wait.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.close_sent {
            if let Err(e) = ready!(Pin::new(&mut this.ws).poll_close(cx)) {
                return Poll::Ready(into_io(e).map_or(Ok(()), Err));
            }
            this.close_sent = true;
        }
        while !this.eof {
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(_)) => {}
                None | Some(Err(_)) => this.eof = true,
            }
        }
        Poll::Ready(Ok(()))
    }
}
