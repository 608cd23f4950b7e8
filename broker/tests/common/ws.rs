//! WebSocket clients (tokio-tungstenite) for MQTT over WebSocket, and a
//! Raw client over one (the broker's own `WsTransport` adapter, used on the
//! client side).

use std::net::SocketAddr;

use broker::listener::ws::WsTransport;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::Raw;

/// The WebSocket upgrade over `stream` to `path`, offering `subprotocols`
/// (none if empty).
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    addr: SocketAddr,
    scheme: &str,
    path: &str,
    subprotocols: &[&str],
) -> Result<(WebSocketStream<S>, Response), WsError> {
    let mut request = format!("{scheme}://localhost:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    if !subprotocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&subprotocols.join(", ")).unwrap(),
        );
    }
    tokio_tungstenite::client_async(request, stream).await
}

/// A WebSocket connection to `ws://addr/path`.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    subprotocols: &[&str],
) -> Result<(WebSocketStream<TcpStream>, Response), WsError> {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    tcp.set_nodelay(true).unwrap();
    upgrade(tcp, addr, "ws", path, subprotocols).await
}

/// A Raw client over `ws://addr/mqtt` with subprotocol `mqtt`, not yet
/// MQTT-connected.
pub async fn raw(addr: SocketAddr) -> Raw {
    let (ws, response) = connect(addr, "/mqtt", &["mqtt"])
        .await
        .expect("websocket upgrade");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    Raw::over(WsTransport::new(ws))
}

/// A Raw client over WebSocket, MQTT-connected (3.1.1).
pub async fn mqtt(addr: SocketAddr, client_id: &str) -> Raw {
    let mut raw = raw(addr).await;
    assert_eq!(raw.try_connect_mqtt(client_id).await, Some(0));
    raw
}
