//! Small pieces of the wire protocol shared by the rendezvous and the ring: little-endian
//! integers, length-prefixed strings, and connecting or accepting before a deadline.

use super::CommError;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Opens every handshake, so a stray connection is told apart from a pinch rank.
pub const MAGIC: u32 = 0x5049_4e43; // "PINC"

/// How long to wait between polls of a listener or retries of a refused connection.
const POLL: Duration = Duration::from_millis(5);

pub fn write_u32s(stream: &mut impl Write, values: &[u32]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(4 * values.len());
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    stream.write_all(&bytes)
}

pub fn read_u32(stream: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// Three words: the magic, a rank and a world size; the handshake of both protocols.
pub fn read_hello(stream: &mut impl Read) -> io::Result<Option<(usize, usize)>> {
    if read_u32(stream)? != MAGIC {
        return Ok(None);
    }
    let rank = read_u32(stream)? as usize;
    let world = read_u32(stream)? as usize;
    Ok(Some((rank, world)))
}

pub fn write_hello(stream: &mut impl Write, rank: usize, world: usize) -> io::Result<()> {
    write_u32s(stream, &[MAGIC, rank as u32, world as u32])
}

pub fn write_str(stream: &mut impl Write, text: &str) -> io::Result<()> {
    write_u32s(stream, &[text.len() as u32])?;
    stream.write_all(text.as_bytes())
}

/// Longest string accepted, so a garbage length cannot make us allocate gigabytes.
const MAX_STR_BYTES: u32 = 64 * 1024;

pub fn read_str(stream: &mut impl Read) -> io::Result<String> {
    let len = read_u32(stream)?;
    if len > MAX_STR_BYTES {
        let message = format!("string of {len} bytes exceeds {MAX_STR_BYTES}");
        return Err(io::Error::new(ErrorKind::InvalidData, message));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

/// Time left before `deadline`, at least a millisecond (a zero socket timeout is refused).
pub fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

pub fn timeout(waiting_for: String, after: Duration) -> CommError {
    CommError::Timeout {
        waiting_for,
        after_ms: after.as_millis() as u64,
    }
}

/// Whether an I/O error means the other side has gone away.
pub fn is_closed(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

/// Whether an I/O error is a socket timeout firing.
pub fn is_timeout(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The next connection on `listener`, or a timeout naming what was awaited.
pub fn accept_until(
    listener: &TcpListener,
    started: Instant,
    deadline: Instant,
    waiting_for: &dyn Fn() -> String,
) -> Result<TcpStream, CommError> {
    listener
        .set_nonblocking(true)
        .map_err(|source| CommError::Accept { source })?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|source| CommError::Accept { source })?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(timeout(waiting_for(), started.elapsed()));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => return Err(CommError::Accept { source }),
        }
    }
}

/// A connection to `addr`, retrying while it is refused (the peer may not listen yet).
pub fn connect_until(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, CommError> {
    loop {
        let attempt = remaining(deadline).min(Duration::from_secs(1));
        match TcpStream::connect_timeout(&addr, attempt) {
            Ok(stream) => return Ok(stream),
            Err(e) if retryable(e.kind()) && Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(source) => return Err(CommError::Connect { addr, source }),
        }
    }
}

fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
