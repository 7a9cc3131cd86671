//! Coverage-guided fuzzing of frame and header decoding: arbitrary bytes go through the frame
//! decoder (with a small limit so large claimed lengths are exercised), every decoded command's
//! typed send and pull headers, and the record and batch iterators over its body. Any panic is a
//! bug; errors are expected. A decoded command must also re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_protocol::FrameCodec;
use ringmq_protocol::header::{PullMessageRequestHeader, SendMessageRequestHeader};
use ringmq_protocol::message::{BatchIter, RecordIter};

fuzz_target!(|data: &[u8]| {
    let codec = FrameCodec::new(1 << 20);
    let mut buffer = BytesMut::from(data);
    loop {
        match codec.decode(&mut buffer) {
            Ok(Some(command)) => {
                let _ = SendMessageRequestHeader::from_command(&command);
                let _ = command.header::<PullMessageRequestHeader<'_>>();
                let _ = RecordIter::new(&command.body).count();
                let _ = BatchIter::new(&command.body).count();
                let mut wire = BytesMut::new();
                command.encode(&mut wire);
                let again = codec.decode(&mut wire).expect("re-encoded frame decodes").expect("whole frame");
                assert_eq!(again.code, command.code);
                assert_eq!(again.ext, command.ext);
                assert_eq!(again.body, command.body);
            }
            Ok(None) => break,
            Err(error) if error.is_fatal() => break,
            Err(_) => {}
        }
    }
});
