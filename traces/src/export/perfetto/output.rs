//! Where encoded packets go. The encoder appends framed packets to a chunk; a full chunk goes
//! to a writer thread that deflates it into one `compressed_packets` packet (or passes it on
//! as it is) and writes it, so that encoding and compressing run on two cores. When the writer
//! thread falls behind, the encoder deflates the next chunk itself rather than wait, so both
//! cores share whichever work is the larger. Emptied chunks come back to be filled again:
//! memory stays at a few chunks however large the trace.

use super::proto;
use super::wire::{key_len, put_key, put_varint, varint_len};
use flate2::{Compress, FlushCompress, Status};
use prost::encoding::WireType;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// How the packets are stored in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// In batches, each deflated into one `TracePacket.compressed_packets` (zlib), which
    /// trace_processor and ui.perfetto.dev expand as they load: a fraction of the size.
    #[default]
    Deflate,
    /// Every packet as it is, for readers that do not expand `compressed_packets`.
    None,
}

/// The raw bytes a chunk holds at most. Perfetto wants each compressed packet under 512 KiB;
/// deflate adds at most a few bytes per 16 KiB to data it cannot shrink.
pub(super) const CHUNK_BYTES: usize = 480 * 1024;

/// Chunks in flight to the writer thread before the encoder waits for it.
const QUEUE: usize = 2;

/// A chunk on its way to the writer thread.
#[derive(Debug)]
enum Chunk {
    /// Framed packets, to compress (or not) and write.
    Packets(Vec<u8>),
    /// A framed `compressed_packets` packet the encoder made, to write as it is.
    Deflated(Vec<u8>),
}

/// The encoder's end: the chunk being filled and the way to the writer thread.
#[derive(Debug)]
pub(super) struct ChunkOutput<W: Write + Send + 'static> {
    pub(super) chunk: Vec<u8>,
    compression: Compression,
    to_writer: Option<SyncSender<Chunk>>,
    spare: Receiver<Vec<u8>>,
    /// Compresses here when the writer thread is behind.
    deflater: Option<Deflater>,
    writer: Option<JoinHandle<io::Result<W>>>,
    done: Option<W>,
}

impl<W: Write + Send + 'static> ChunkOutput<W> {
    pub(super) fn new(out: W, compression: Compression) -> io::Result<Self> {
        let (to_writer, chunks) = sync_channel::<Chunk>(QUEUE);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let writer = std::thread::Builder::new()
            .name("pftrace-writer".into())
            .spawn(move || write_chunks(out, compression, &chunks, &give_back))?;
        Ok(ChunkOutput {
            chunk: Vec::with_capacity(CHUNK_BYTES),
            compression,
            to_writer: Some(to_writer),
            spare,
            deflater: None,
            writer: Some(writer),
            done: None,
        })
    }

    /// Makes room for a packet of `bytes`: ships the chunk first if it would overflow.
    #[inline]
    pub(super) fn reserve(&mut self, bytes: usize) -> io::Result<()> {
        if self.chunk.len() + bytes > CHUNK_BYTES && !self.chunk.is_empty() {
            self.ship()?;
        }
        Ok(())
    }

    fn ship(&mut self) -> io::Result<()> {
        let next = match self.spare.try_recv() {
            Ok(mut chunk) => {
                chunk.clear();
                chunk
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                Vec::with_capacity(CHUNK_BYTES)
            }
        };
        let full = std::mem::replace(&mut self.chunk, next);
        let Some(tx) = self.to_writer.as_ref() else {
            return self.finish().map(|_| ());
        };
        let sent = match tx.try_send(Chunk::Packets(full)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Chunk::Packets(full)))
                if self.compression == Compression::Deflate =>
            {
                // The writer thread is behind: deflate this one here, then wait for room.
                let deflater = self.deflater.get_or_insert_with(Deflater::default);
                let packet = deflater.packet(&full)?.to_vec();
                tx.send(Chunk::Deflated(packet)).map_err(|_| ())
            }
            Err(TrySendError::Full(chunk)) => tx.send(chunk).map_err(|_| ()),
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        match sent {
            Ok(()) => Ok(()),
            // The writer thread stopped: its error says why.
            Err(()) => self.finish().map(|_| ()),
        }
    }

    /// Ships what is left, waits for the writer thread and flushes; the output, once.
    pub(super) fn finish(&mut self) -> io::Result<&mut W> {
        if let Some(tx) = self.to_writer.take()
            && !self.chunk.is_empty()
        {
            let last = std::mem::take(&mut self.chunk);
            // A failed send means the thread ended; join says why.
            let _ = tx.send(Chunk::Packets(last));
        }
        if let Some(writer) = self.writer.take() {
            let out = writer
                .join()
                .map_err(|_| io::Error::other("the trace writer thread panicked"))??;
            self.done = Some(out);
        }
        match self.done.as_mut() {
            Some(out) => Ok(out),
            None => Err(io::Error::other("the trace writer failed before")),
        }
    }

    /// The output, after `finish`.
    pub(super) fn into_inner(mut self) -> io::Result<W> {
        self.finish()?;
        self.done
            .take()
            .ok_or_else(|| io::Error::other("the trace writer failed before"))
    }
}

/// The writer thread: each chunk out (compressed or not), then flush; the output back.
fn write_chunks<W: Write>(
    mut out: W,
    compression: Compression,
    chunks: &Receiver<Chunk>,
    give_back: &SyncSender<Vec<u8>>,
) -> io::Result<W> {
    let mut deflate = Deflater::default();
    for chunk in chunks {
        let chunk = match chunk {
            Chunk::Deflated(packet) => {
                out.write_all(&packet)?;
                continue;
            }
            Chunk::Packets(chunk) => chunk,
        };
        match compression {
            Compression::None => out.write_all(&chunk)?,
            Compression::Deflate => out.write_all(deflate.packet(&chunk)?)?,
        }
        // The encoder allocates a new chunk if none comes back.
        let _ = give_back.try_send(chunk);
    }
    out.flush()?;
    Ok(out)
}

/// Turns a chunk of framed packets into one framed `compressed_packets` packet.
#[derive(Debug)]
struct Deflater {
    zlib: Compress,
    /// The compressed bytes, after room for the frame.
    body: Vec<u8>,
    packet: Vec<u8>,
}

/// Room for the frame before the compressed bytes: two keys and two lengths of a chunk.
const FRAME_ROOM: usize = 16;

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            // Level 1: the fastest of zlib's, about a tenth of the raw size on traces.
            zlib: Compress::new(flate2::Compression::fast(), true),
            body: Vec::with_capacity(CHUNK_BYTES + 1024),
            packet: Vec::with_capacity(CHUNK_BYTES + 1024),
        }
    }
}

impl Deflater {
    fn packet(&mut self, chunk: &[u8]) -> io::Result<&[u8]> {
        self.zlib.reset();
        self.body.clear();
        loop {
            let read = self.zlib.total_in() as usize;
            self.body.reserve(chunk.len() / 2 + 1024);
            let status = self
                .zlib
                .compress_vec(&chunk[read..], &mut self.body, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
        }
        let field = proto::packet::COMPRESSED_PACKETS;
        let inner = key_len(field) + varint_len(self.body.len() as u64) + self.body.len();
        self.packet.clear();
        self.packet.reserve(FRAME_ROOM + self.body.len());
        put_key(
            &mut self.packet,
            proto::TRACE_PACKET,
            WireType::LengthDelimited,
        );
        put_varint(&mut self.packet, inner as u64);
        put_key(&mut self.packet, field, WireType::LengthDelimited);
        put_varint(&mut self.packet, self.body.len() as u64);
        self.packet.extend_from_slice(&self.body);
        Ok(&self.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fill(output: &mut ChunkOutput<Vec<u8>>, packets: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        for i in 0..packets {
            let packet = [0x0a, 0x03, 0x40, (i % 100) as u8, 0x00];
            output.reserve(packet.len()).unwrap();
            output.chunk.extend_from_slice(&packet);
            raw.extend_from_slice(&packet);
        }
        raw
    }

    /// The `compressed_packets` payloads of a file of such packets, expanded and joined.
    fn expand(file: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut at = 0;
        while at < file.len() {
            assert_eq!(file[at], 0x0a);
            at += 1;
            let len = prost::encoding::decode_varint(&mut &file[at..]).unwrap() as usize;
            at += varint_len(len as u64);
            let packet = &file[at..at + len];
            at += len;
            assert_eq!(&packet[..2], &[0x92, 0x03], "field 50, length-delimited");
            let mut rest = &packet[2..];
            let body_len = prost::encoding::decode_varint(&mut rest).unwrap() as usize;
            assert_eq!(rest.len(), body_len);
            assert!(
                packet.len() + 4 < 512 * 1024,
                "a compressed packet under 512 KiB"
            );
            flate2::read::ZlibDecoder::new(rest)
                .read_to_end(&mut raw)
                .unwrap();
        }
        raw
    }

    #[test]
    fn uncompressed_chunks_arrive_whole_and_in_order() {
        let mut output = ChunkOutput::new(Vec::new(), Compression::None).unwrap();
        let raw = fill(&mut output, 300_000);
        assert_eq!(output.into_inner().unwrap(), raw);
    }

    #[test]
    fn deflated_chunks_expand_to_the_packets_in_order() {
        let mut output = ChunkOutput::new(Vec::new(), Compression::Deflate).unwrap();
        let raw = fill(&mut output, 300_000);
        let file = output.into_inner().unwrap();
        assert!(
            file.len() < raw.len() / 4,
            "{} of {}",
            file.len(),
            raw.len()
        );
        assert_eq!(expand(&file), raw);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_comes_back_to_the_encoder() {
        let mut output = ChunkOutput::new(Broken, Compression::None).unwrap();
        let mut failed = None;
        for _ in 0..10_000 {
            if let Err(err) = output.reserve(CHUNK_BYTES) {
                failed = Some(err);
                break;
            }
            output.chunk.extend_from_slice(&[0; 100]);
        }
        let err = match failed {
            Some(err) => err,
            None => output.finish().map(|_| ()).unwrap_err(),
        };
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
