//! Connections as h2 sees them, on both ends.
//!
//! h2 copies a DATA frame into its write buffer only when the payload is
//! small. A larger one is chained behind the buffer, and nothing more may be
//! queued until that chain is written. Over a socket that takes vectored
//! writes "small" means 256 bytes, and a Score reply (identity, provenance,
//! score) is larger: each reply cost one `writev` for its HEADERS and DATA and
//! another for its trailers, and replies that finished together still left
//! one by one. A positional Score request is larger too, so a client sent its
//! HEADERS and its DATA apart. Declaring the socket unvectored raises h2's
//! copy threshold to 1 KiB, so a message's frames, and messages that finish
//! together, leave in one write. Copying a few hundred bytes costs far less
//! than a system call, and on loopback every write is also a segment the peer
//! must take in.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::{
    Channel, Endpoint, Uri,
    server::{Connected, TcpConnectInfo},
};

/// A TCP connection, either end, that h2 writes to in whole buffers.
pub(super) struct Coalescing(pub(super) TcpStream);

impl Connected for Coalescing {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for Coalescing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    // The point of this type: see the module documentation.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Connects a channel to `endpoint` over TCP whose requests leave in one
/// write each (see the module documentation). TLS, when the endpoint is
/// configured for it, runs on top as with [`Endpoint::connect`].
pub async fn connect(endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
    let connector = tower::service_fn(|uri: Uri| async move {
        let host = uri.host().unwrap_or_default();
        // An IPv6 literal keeps its brackets in a URI, not in an address.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let stream = TcpStream::connect((host, port)).await?;
        // As on the server: small messages must not wait for Nagle.
        stream.set_nodelay(true)?;
        Ok::<_, io::Error>(TokioIo::new(Coalescing(stream)))
    });
    endpoint.connect_with_connector(connector).await
}
