//! Remoting frames over a tokio `TcpStream`: what the controller's server and its Raft peers
//! speak (the broker side uses the blocking client of `ringmq_protocol`).

use bytes::BytesMut;
use ringmq_protocol::{Command, CommandHead, EncodeExt, FrameCodec, encode_frame};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// Largest frame either side accepts: Raft snapshots of a table of thousands of broker groups
/// fit easily.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// One connection, framed: both directions on one task (a client's request and its answer).
#[derive(Debug)]
pub struct FramedStream {
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
}

impl FramedStream {
    pub fn new(stream: TcpStream) -> Self {
        let (reader, writer) = split(stream);
        Self { reader, writer }
    }

    /// The next frame, or `None` when the peer closed between frames.
    pub async fn read(&mut self) -> std::io::Result<Option<Command>> {
        self.reader.read().await
    }

    /// Writes one frame.
    pub async fn write(
        &mut self,
        head: &CommandHead<'_>,
        ext: &impl EncodeExt,
        body: &[u8],
    ) -> std::io::Result<()> {
        self.writer.write(head, ext, body).await
    }
}

/// Splits a server's connection, so answers can be written by whichever task finishes its
/// request (a slow request does not hold up a quick one behind it).
pub fn split(stream: TcpStream) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    (FrameReader::new(read), FrameWriter::new(write))
}

/// The reading side: frames split off a receive buffer.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    buffer: BytesMut,
    codec: FrameCodec,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(io: R) -> Self {
        Self {
            io,
            buffer: BytesMut::with_capacity(8 << 10),
            codec: FrameCodec::new(MAX_FRAME_BYTES),
        }
    }

    /// The next frame, or `None` when the peer closed between frames.
    pub async fn read(&mut self) -> std::io::Result<Option<Command>> {
        loop {
            match self.codec.decode(&mut self.buffer) {
                Ok(Some(command)) => return Ok(Some(command)),
                Ok(None) => {}
                Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
            }
            if self.buffer.capacity() - self.buffer.len() < 4096 {
                self.buffer.reserve(8 << 10);
            }
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}

/// The writing side: frames encoded into one reused buffer.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    buffer: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    fn new(io: W) -> Self {
        Self {
            io,
            buffer: BytesMut::new(),
        }
    }

    /// Writes one frame.
    pub async fn write(
        &mut self,
        head: &CommandHead<'_>,
        ext: &impl EncodeExt,
        body: &[u8],
    ) -> std::io::Result<()> {
        self.buffer.clear();
        encode_frame(head, ext, body, &mut self.buffer);
        self.io.write_all(&self.buffer).await
    }
}
