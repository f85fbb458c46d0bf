//! Reads ahead on a socket for the TLS layer above it, which asks for 4 KiB at a time: one
//! system call takes up to [`READ_AHEAD_BYTES`] of what has arrived, and the TLS layer's
//! reads are served from that. A 28 KB review then costs one or two reads instead of seven.
//!
//! The buffer is held only while it holds bytes: a connection waiting for its next request
//! holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read from the socket takes.
pub(super) const READ_AHEAD_BYTES: usize = 64 * 1024;

/// A socket read ahead of its reader; writes go straight through.
pub(super) struct ReadAhead<S> {
    inner: S,
    ahead: BytesMut,
}

impl<S> ReadAhead<S> {
    pub(super) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            ahead: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            if out.remaining() >= READ_AHEAD_BYTES {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.ahead.reserve(READ_AHEAD_BYTES);
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.ahead);
            if !matches!(read, Poll::Ready(Ok(n)) if n > 0) {
                // Nothing arrived (or the end, or an error): hold no buffer meanwhile.
                this.ahead = BytesMut::new();
            }
            ready!(read)?;
        }
        let n = out.remaining().min(this.ahead.len());
        out.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        if this.ahead.is_empty() {
            this.ahead = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_reads_get_the_stream_as_sent_and_hold_nothing_after() {
        let sent = data(3 * READ_AHEAD_BYTES + 123);
        let mut reader = ReadAhead::new(&sent[..]);
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
            if reader.ahead.is_empty() {
                assert_eq!(reader.ahead.capacity(), 0, "an empty buffer is held");
            }
        }
        assert_eq!(received, sent);
        assert_eq!(reader.ahead.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_read_and_writes_go_straight_through() {
        let (near, mut far) = tokio::io::duplex(4 * READ_AHEAD_BYTES);
        let mut near = ReadAhead::new(near);
        let sent = data(READ_AHEAD_BYTES + 5);
        far.write_all(&sent).await.unwrap();
        let mut received = vec![0u8; 2 * READ_AHEAD_BYTES];
        let n = near.read(&mut received).await.unwrap();
        assert_eq!(&received[..n], &sent[..n]);
        assert_eq!(
            near.ahead.capacity(),
            0,
            "a read as large as the buffer needs none"
        );
        near.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        far.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }
}
