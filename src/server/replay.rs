//! A stream that hands back bytes already read from it before reading on.
//!
//! The server reads a new connection's first bytes itself, to tell a TLS ClientHello from
//! plain HTTP, and passes them on to rustls through this instead of peeking at them (which
//! costs a second `recvfrom` for the same bytes).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `head`, then whatever `inner` reads; writes go to `inner` untouched.
#[derive(Debug)]
pub struct Replay<T> {
    head: Vec<u8>,
    /// How much of `head` has been handed out.
    pos: usize,
    inner: T,
}

impl<T> Replay<T> {
    pub fn new(head: Vec<u8>, inner: T) -> Self {
        Replay {
            head,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.head[this.pos..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        if this.pos == this.head.len() {
            // Handed out in full: the connection lives on without the buffer.
            this.head = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn hands_back_the_head_then_reads_on_and_writes_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut replay = Replay::new(b"hello, ".to_vec(), near);
        far.write_all(b"world").await.unwrap();
        drop(far.shutdown().await);

        // A reader smaller than the head gets it in pieces, then the stream's own bytes.
        let mut small = [0u8; 3];
        let mut seen = Vec::new();
        loop {
            let n = replay.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&small[..n]);
        }
        assert_eq!(seen, b"hello, world");
        assert!(replay.head.is_empty(), "the head is freed once handed out");

        replay.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn an_empty_head_is_the_stream_itself() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut replay = Replay::new(Vec::new(), near);
        far.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        let n = replay.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abc");
    }
}
