//! The hot path allocates nothing: decoding a SEND_MESSAGE_V2 or PULL frame and reading its typed
//! header, and encoding one into a buffer with spare capacity, make zero heap allocations.
//!
//! Counted with a global allocator wrapper, so this file is its own test binary. Only the
//! allocations of the thread doing the work count: the test harness's own threads allocate at
//! times of their own (more so on a loaded machine) and must not skew the count.

// A counting `GlobalAlloc` needs `unsafe impl`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use ringmq_protocol::header::{
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    SendMessageResponseHeader,
};
use ringmq_protocol::{
    Command, CommandHead, FrameCodec, RequestCode, ResponseCode, SerializeType, encode_frame,
};

struct CountingAllocator;

thread_local! {
    /// Allocations made by this thread. Const-initialized and without a destructor, so reading
    /// it from inside the allocator never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread being torn down has no slot any more; its allocations do not matter.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: forwards every call unchanged to `System`, which upholds the `GlobalAlloc` contract.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(work: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

fn send_header() -> SendMessageRequestHeader<'static> {
    SendMessageRequestHeader {
        producer_group: "pg",
        topic: "TopicTest",
        default_topic: "TBW102",
        default_topic_queue_nums: 4,
        queue_id: 1,
        sys_flag: 0,
        born_timestamp_ms: 1_700_000_000_000,
        flag: 0,
        properties: Some(
            "UNIQ_KEY\u{1}7F00000100002A9F0000000000001F40\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA",
        ),
        reconsume_times: Some(0),
        unit_mode: Some(false),
        max_reconsume_times: None,
        batch: Some(false),
        broker_name: Some("broker-a"),
    }
}

#[test]
fn hot_path_codec_operations_do_not_allocate() {
    // The counter sees this thread's allocations (else every zero below would be vacuous).
    let seen = allocations_during(|| drop(std::hint::black_box(vec![0_u8; 64])));
    assert_eq!(seen, 1, "the counting allocator is not counting");

    let codec = FrameCodec::default();
    let body = vec![7u8; 1024];
    for serialize_type in [SerializeType::RocketMq, SerializeType::Json] {
        let header = send_header();
        let mut wire = BytesMut::with_capacity(64 * 1024);
        let encode = allocations_during(|| {
            encode_frame(
                &CommandHead::request(RequestCode::SendMessageV2, 1, serialize_type),
                &header.v2(),
                &body,
                &mut wire,
            );
        });
        assert_eq!(encode, 0, "{serialize_type:?} SEND_MESSAGE_V2 encode");

        // Promote the buffer to shared storage once, as a connection's read buffer is after its
        // first frame; from then on splitting frames off it is free.
        let mut warm = BytesMut::with_capacity(64 * 1024);
        encode_frame(
            &CommandHead::request(RequestCode::HeartBeat, 0, serialize_type),
            &(),
            &[],
            &mut warm,
        );
        drop(codec.decode(&mut warm));
        warm.extend_from_slice(&wire);

        let mut decoded = None;
        let decode = allocations_during(|| {
            let command: Command = codec.decode(&mut warm).ok().flatten().expect("frame");
            let header = SendMessageRequestHeader::from_command(&command).expect("header");
            assert_eq!(header.queue_id, 1);
            assert_eq!(header.properties, send_header().properties);
            decoded = Some(command.body.len());
        });
        assert_eq!(decoded, Some(1024));
        assert_eq!(
            decode, 0,
            "{serialize_type:?} SEND_MESSAGE_V2 decode + typed header"
        );

        let mut request = Command::request(RequestCode::SendMessageV2, 9);
        request.serialize_type = serialize_type;
        let mut out = BytesMut::with_capacity(4096);
        let response = SendMessageResponseHeader {
            msg_id: "C0A8000A00002A9F0000000000001F40",
            queue_id: 1,
            queue_offset: 17,
            transaction_id: None,
            msg_region: Some("DefaultRegion"),
            trace_on: Some("true"),
        };
        let respond = allocations_during(|| {
            encode_frame(
                &CommandHead::response_to(&request, ResponseCode::Success),
                &response,
                &[],
                &mut out,
            );
            let pull = PullMessageResponseHeader {
                suggest_which_broker_id: 0,
                next_begin_offset: 1,
                min_offset: 0,
                max_offset: 1,
            };
            encode_frame(
                &CommandHead::response_to(&request, ResponseCode::Success),
                &pull,
                &[],
                &mut out,
            );
        });
        assert_eq!(respond, 0, "{serialize_type:?} send and pull responses");

        let mut pull_request = Command::request(RequestCode::PullMessage, 3);
        pull_request.serialize_type = serialize_type;
        for (key, value) in [
            ("consumerGroup", "g"),
            ("topic", "TopicTest"),
            ("queueId", "0"),
            ("queueOffset", "100"),
            ("maxMsgNums", "32"),
            ("sysFlag", "3"),
            ("commitOffset", "90"),
            ("suspendTimeoutMillis", "15000"),
            ("subVersion", "0"),
        ] {
            pull_request.ext.insert(key, value);
        }
        let mut pull_wire = BytesMut::with_capacity(4096);
        pull_request.encode(&mut pull_wire);
        warm.extend_from_slice(&pull_wire);
        let pull_decode = allocations_during(|| {
            let command = codec.decode(&mut warm).ok().flatten().expect("frame");
            let header: PullMessageRequestHeader<'_> = command.header().expect("header");
            assert!(header.is_suspend() && header.has_commit_offset());
        });
        assert_eq!(
            pull_decode, 0,
            "{serialize_type:?} PULL_MESSAGE decode + typed header"
        );
    }
}
