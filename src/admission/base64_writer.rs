//! The patch's base64, written as the patch is made: a few kilobytes of it at a time, each
//! encoded in one call (with SIMD where the CPU has it).

use std::io::{self, Write};

use base64_simd::STANDARD;

/// How much is encoded at a time: a multiple of 3 bytes, so that only the last piece has
/// padding.
const CHUNK: usize = 6 * 1024;

/// Writes the base64 (standard alphabet, padded) of what is written to it to `out`.
/// [`Base64Writer::finish`] writes the last piece.
pub(super) struct Base64Writer<W: Write> {
    out: W,
    /// Written and not yet encoded: less than [`CHUNK`].
    pending: Vec<u8>,
    encoded: Vec<u8>,
}

impl<W: Write> Base64Writer<W> {
    /// A writer to `out` that holds about `expected` bytes (at most a chunk) before it
    /// encodes them.
    pub(super) fn new(out: W, expected: usize) -> Self {
        Base64Writer {
            out,
            pending: Vec::with_capacity(expected.min(CHUNK)),
            encoded: Vec::new(),
        }
    }

    /// Encodes what is pending, padded, and writes it.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.encode_pending()?;
        Ok(self.out)
    }

    fn encode_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        STANDARD.encode_append(&self.pending, &mut self.encoded);
        self.pending.clear();
        self.out.write_all(&self.encoded)
    }
}

impl<W: Write> Write for Base64Writer<W> {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..taken]);
        if self.pending.len() == CHUNK {
            self.encode_pending()?;
        }
        Ok(taken)
    }

    /// The patch is written a token at a time: most writes only add to what is pending.
    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() < CHUNK - self.pending.len() {
            self.pending.extend_from_slice(buf);
            return Ok(());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let taken = self.write(rest)?;
            rest = &rest[taken..];
        }
        Ok(())
    }

    /// Flushes `out`; what is pending waits for [`Base64Writer::finish`], since base64 can
    /// only be cut every 3 bytes.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose;
    use proptest::prelude::*;

    use super::*;

    fn encoded(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut writer = Base64Writer::new(Vec::new(), 10);
        for piece in pieces {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn nothing_written_is_nothing() {
        assert!(encoded(&[]).is_empty());
    }

    #[test]
    fn pieces_across_chunks_are_encoded_as_one_text() {
        let whole: Vec<u8> = (0..3 * CHUNK + 2).map(|i| (i * 7 % 256) as u8).collect();
        let pieces: Vec<Vec<u8>> = whole.chunks(1000).map(<[u8]>::to_vec).collect();
        let expected = general_purpose::STANDARD.encode(&whole);
        assert_eq!(String::from_utf8(encoded(&pieces)).unwrap(), expected);
    }

    proptest! {
        #[test]
        fn encodes_as_the_base64_crate_does(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..8)
        ) {
            let whole = pieces.concat();
            let expected = general_purpose::STANDARD.encode(&whole);
            prop_assert_eq!(String::from_utf8(encoded(&pieces)).unwrap(), expected);
        }
    }
}
