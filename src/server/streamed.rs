//! An answer made on a blocking thread and sent as it is made: what is written to a
//! [`ChunkWriter`] goes to its response body a chunk of about [`CHUNK_BYTES`] at a time, with
//! at most [`STREAMED_CHUNKS`] waiting for the connection. A large answer is then never held
//! whole, and a slow client holds back the writer rather than the server's memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many chunks of an answer wait for the connection at most.
const STREAMED_CHUNKS: usize = 2;

/// The size of the chunks an answer is sent in.
const CHUNK_BYTES: usize = 64 * 1024;

/// Sends what is written to it, in chunks of about [`CHUNK_BYTES`], to its response body;
/// waits while the connection is slow, until its deadline. For a blocking thread: it
/// waits on the runtime it was made with.
pub(super) struct ChunkWriter {
    runtime: tokio::runtime::Handle,
    chunks: mpsc::Sender<Bytes>,
    deadline: Instant,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    /// A writer whose chunks must be taken by the connection before `deadline`, and the
    /// response body that sends them. The body ends when the writer is dropped: a writer
    /// that stops early leaves the answer short, and the client sees a malformed answer
    /// rather than a wrong one.
    pub(super) fn new(runtime: tokio::runtime::Handle, deadline: Instant) -> (Self, Body) {
        let (chunks, stream) = mpsc::channel(STREAMED_CHUNKS);
        let writer = ChunkWriter {
            runtime,
            chunks,
            deadline,
            buffer: Vec::with_capacity(CHUNK_BYTES),
        };
        (writer, Body::new(ChunkBody(stream)))
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        let sent = tokio::time::timeout_at(self.deadline, self.chunks.send(chunk));
        match self.runtime.block_on(sent) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(io::Error::other("the connection closed")),
            Err(_elapsed) => Err(io::Error::other(
                "the answer was not read within the request timeout",
            )),
        }
    }

    /// Sends what is left.
    pub(super) fn finish(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl io::Write for ChunkWriter {
    /// Takes all of `buf` (a writer that takes part of it can be taken for one that is full),
    /// sending a chunk once there is one.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A response body of the chunks a [`ChunkWriter`] sends.
struct ChunkBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use http_body_util::BodyExt;

    use super::*;

    /// `total` bytes that repeat only every 251, so that a chunk lost, repeated or moved shows.
    fn pattern(total: usize) -> Vec<u8> {
        (0..total).map(|i| (i % 251) as u8).collect()
    }

    /// Writes [`pattern`] of `total` bytes, `piece` bytes at a time, then finishes.
    fn write_pattern(out: &mut ChunkWriter, total: usize, piece: usize) -> io::Result<()> {
        for part in pattern(total).chunks(piece) {
            out.write_all(part)?;
        }
        out.finish()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_arrives_whole_a_chunk_at_a_time() {
        let total = 3 * CHUNK_BYTES + 12_345;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut out, mut body) = ChunkWriter::new(tokio::runtime::Handle::current(), deadline);
        let writer = tokio::task::spawn_blocking(move || write_pattern(&mut out, total, 1000));
        let mut sizes = Vec::new();
        let mut received = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            sizes.push(data.len());
            received.extend_from_slice(&data);
        }
        writer.await.unwrap().unwrap();
        assert!(received == pattern(total), "the answer arrived changed");
        // Each chunk but the last is sent once it reaches CHUNK_BYTES, within one write.
        let (last, full) = sizes.split_last().unwrap();
        assert_eq!(full.len(), 3, "chunk sizes: {sizes:?}");
        assert!(
            full.iter()
                .all(|&n| (CHUNK_BYTES..CHUNK_BYTES + 1000).contains(&n))
        );
        assert!(*last > 0 && *last < CHUNK_BYTES, "chunk sizes: {sizes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_connection_stops_the_writer() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut out, body) = ChunkWriter::new(tokio::runtime::Handle::current(), deadline);
        drop(body);
        let written = tokio::task::spawn_blocking(move || write_pattern(&mut out, 1000, 100))
            .await
            .unwrap();
        let error = written.expect_err("a closed connection took the answer");
        assert_eq!(error.to_string(), "the connection closed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_nobody_reads_stops_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(200);
        let (mut out, body) = ChunkWriter::new(tokio::runtime::Handle::current(), deadline);
        // More chunks than wait for the connection, and the body is never read.
        let total = (STREAMED_CHUNKS + 2) * CHUNK_BYTES;
        let written = tokio::task::spawn_blocking(move || write_pattern(&mut out, total, 4096))
            .await
            .unwrap();
        let error = written.expect_err("an unread answer was taken whole");
        assert_eq!(
            error.to_string(),
            "the answer was not read within the request timeout"
        );
        assert!(Instant::now() >= deadline);
        drop(body);
    }
}
