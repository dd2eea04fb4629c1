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
//!
//! A connection also closes without losing its last replies. When the
//! server drains at shutdown, h2 writes the last frames, shuts the socket
//! down for writing and drops it. If the peer has meanwhile sent anything
//! (a WINDOW_UPDATE for a large reply it is reading), Linux closes a socket
//! that holds unread bytes with RST and drops whatever it has not sent
//! yet: the peer read `ECONNRESET` in the middle of a reply. So shutting
//! down also reads and discards until the peer closes too, for at most
//! [`LINGER`], as web servers' lingering close does.
//!
//! And an accepted connection can be cut from outside ([`Cutoff`]): the
//! admission layer cuts one that leaves an answer unread past its time.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use atomic_waker::AtomicWaker;

use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::OwnedSemaphorePermit,
    time::Sleep,
};
use tonic::transport::{Channel, Endpoint, Uri, server::Connected};

/// How long a connection shut down for writing waits for its peer to close.
const LINGER: Duration = Duration::from_secs(1);

/// How long an accepted connection may take to send its opening
/// ([`OPENING_BYTES`]), and a TLS handshake to finish. A client sends its
/// HTTP/2 preface at once; a socket that sends nothing, or a byte of it and
/// then nothing, would otherwise hold a file descriptor and a place among
/// `limits.max_connections` for ever, and a few of them lock every client
/// out. (Once the preface has come, HTTP/2 keepalive pings find a peer
/// that has gone: `serve`.)
pub(super) const OPENING_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client sends first: the 24-byte HTTP/2 preface and the 9-byte
/// header of the SETTINGS frame that must follow it. A TLS ClientHello is
/// longer, and tonic then times the handshake itself.
const OPENING_BYTES: usize = 24 + 9;

/// The means to close a connection from outside it: its reads and writes
/// fail from then on, and the server drops it with all its streams.
#[derive(Debug, Default)]
pub(super) struct Cutoff {
    cut: AtomicBool,
    /// The connection's task, waiting to read.
    reader: AtomicWaker,
}

impl Cutoff {
    pub(super) fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.reader.wake();
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    fn refusal() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "cut: the peer left an answer unread past its time",
        )
    }
}

/// What a call learns of the connection it came on: its [`Cutoff`].
#[derive(Debug, Clone)]
pub struct Peer {
    pub(super) cutoff: Arc<Cutoff>,
}

/// A TCP connection, either end, that h2 writes to in whole buffers and that
/// closes without dropping what its peer has not read.
pub(super) struct Coalescing {
    stream: TcpStream,
    cutoff: Arc<Cutoff>,
    /// Running once the connection is shut down for writing.
    lingering: Option<Pin<Box<Sleep>>>,
    /// Running on an accepted connection until its opening has arrived.
    silence: Option<Pin<Box<Sleep>>>,
    /// Bytes heard while `silence` runs.
    heard: usize,
    /// An accepted connection's place among `limits.max_connections`.
    _place: Option<OwnedSemaphorePermit>,
}

impl Coalescing {
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            cutoff: Arc::default(),
            lingering: None,
            silence: None,
            heard: 0,
            _place: None,
        }
    }

    /// An accepted connection, which holds `place` while it is open and
    /// fails its reads if it has not sent its opening ([`OPENING_BYTES`])
    /// within `opening`: the server then drops it.
    pub(super) fn accepted(
        stream: TcpStream,
        opening: Duration,
        place: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            silence: Some(Box::pin(tokio::time::sleep(opening))),
            _place: Some(place),
            ..Self::new(stream)
        }
    }
}

impl Connected for Coalescing {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer {
            cutoff: self.cutoff.clone(),
        }
    }
}

impl AsyncRead for Coalescing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Registered before the check, so that a cut in between still wakes.
        this.cutoff.reader.register(cx.waker());
        if this.cutoff.is_cut() {
            return Poll::Ready(Err(Cutoff::refusal()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(silence) = this.silence.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                this.heard += buf.filled().len() - before;
                if this.heard >= OPENING_BYTES {
                    this.silence = None;
                }
            }
            Poll::Pending if silence.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer did not send its opening in time after connecting",
                )));
            }
            _ => {}
        }
        read
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cutoff.is_cut() {
            return Poll::Ready(Err(Cutoff::refusal()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        // Until the peer closes (see the module documentation).
        let mut scratch = [0u8; 1024];
        loop {
            let mut discard = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut discard) {
                Poll::Ready(Ok(())) if discard.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                // Reset by the peer: nothing left to deliver.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        let lingering = this.lingering.as_mut().expect("set when shut down");
        lingering.as_mut().poll(cx).map(Ok)
    }

    // So that h2 copies small frames: see the module documentation.
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
        Ok::<_, io::Error>(TokioIo::new(Coalescing::new(stream)))
    });
    endpoint.connect_with_connector(connector).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A reply larger than the sockets' buffers, and a peer that sent a few
    /// bytes the closing side never read: without the lingering close the
    /// peer reads `ECONNRESET` before the end of the reply.
    #[tokio::test]
    async fn a_closed_connection_delivers_all_it_wrote() {
        const REPLY: usize = 16 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        // Unread by the closing side, as a WINDOW_UPDATE would be.
        peer.write_all(b"window update").await.unwrap();
        let closing = tokio::spawn(async move {
            let mut connection = Coalescing::new(accepted);
            connection.write_all(&vec![7u8; REPLY]).await.unwrap();
            connection.shutdown().await.unwrap();
        });
        let mut reply = Vec::new();
        peer.read_to_end(&mut reply)
            .await
            .expect("the whole reply, then the end of the stream");
        assert_eq!(reply.len(), REPLY);
        drop(peer);
        closing.await.unwrap();
    }

    fn place() -> OwnedSemaphorePermit {
        std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    /// An accepted connection that sends nothing, or only part of its
    /// opening, fails its read once its time is up; one that has sent its
    /// opening may then be quiet for as long as it likes.
    #[tokio::test]
    async fn an_accepted_connection_must_send_its_opening_within_its_time() {
        const FIRST_BYTES: Duration = Duration::from_millis(200);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut connection = Coalescing::accepted(accepted, FIRST_BYTES, place());
        let started = std::time::Instant::now();
        let error = connection.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= FIRST_BYTES);

        let opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
        assert_eq!(opening.len(), OPENING_BYTES);
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut connection = Coalescing::accepted(accepted, FIRST_BYTES, place());
        stalled.write_all(&opening[..1]).await.unwrap();
        connection.read_exact(&mut [0u8; 1]).await.unwrap();
        let error = connection.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);

        let mut speaking = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut connection = Coalescing::accepted(accepted, FIRST_BYTES, place());
        speaking.write_all(opening).await.unwrap();
        let mut first = [0u8; OPENING_BYTES];
        connection.read_exact(&mut first).await.unwrap();
        let quiet = tokio::time::timeout(FIRST_BYTES * 3, connection.read(&mut [0u8; 16])).await;
        assert!(quiet.is_err(), "still waiting, not failed: {quiet:?}");
    }

    /// A cut connection fails its waiting read at once, and its writes.
    #[tokio::test]
    async fn a_cut_connection_fails_its_reads_and_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut connection = Coalescing::new(accepted);
        let cutoff = connection.connect_info().cutoff;
        let reading = tokio::spawn(async move {
            let error = connection.read(&mut [0u8; 16]).await.unwrap_err();
            (
                error.kind(),
                connection.write(b"x").await.unwrap_err().kind(),
            )
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cutoff.cut();
        let kinds = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("the waiting read is woken")
            .unwrap();
        assert_eq!(kinds, (io::ErrorKind::TimedOut, io::ErrorKind::TimedOut));
    }
}
