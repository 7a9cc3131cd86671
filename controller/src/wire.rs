//! Remoting frames over a tokio `TcpStream`: what the controller's server and its Raft peers
//! speak (the broker side uses the blocking client of `ringmq_protocol`).

use bytes::BytesMut;
use ringmq_protocol::{Command, CommandHead, EncodeExt, FrameCodec, encode_frame};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Largest frame either side accepts: Raft snapshots of a table of thousands of broker groups
/// fit easily.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// One connection, framed.
#[derive(Debug)]
pub struct FramedStream {
    stream: TcpStream,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    codec: FrameCodec,
}

impl FramedStream {
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            read_buffer: BytesMut::with_capacity(8 << 10),
            write_buffer: BytesMut::new(),
            codec: FrameCodec::new(MAX_FRAME_BYTES),
        }
    }

    /// The next frame, or `None` when the peer closed between frames.
    pub async fn read(&mut self) -> std::io::Result<Option<Command>> {
        loop {
            match self.codec.decode(&mut self.read_buffer) {
                Ok(Some(command)) => return Ok(Some(command)),
                Ok(None) => {}
                Err(err) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, err)),
            }
            if self.read_buffer.capacity() - self.read_buffer.len() < 4096 {
                self.read_buffer.reserve(8 << 10);
            }
            if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
                return if self.read_buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Writes one frame.
    pub async fn write(
        &mut self,
        head: &CommandHead<'_>,
        ext: &impl EncodeExt,
        body: &[u8],
    ) -> std::io::Result<()> {
        self.write_buffer.clear();
        encode_frame(head, ext, body, &mut self.write_buffer);
        self.stream.write_all(&self.write_buffer).await
    }
}
