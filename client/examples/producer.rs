//! Producer tour: a synchronous send, an awaited one, a oneway send, a batch, and ordered sends
//! through a queue selector.
//!
//! ```text
//! cargo run -p ringmq-client --example producer -- -n 127.0.0.1:9876 [-t TopicTest] [-g group]
//! ```
//!
//! The topic is created by the broker on first send when it auto-creates topics; otherwise
//! create it first (`ringmq-admin topic create`).

use std::process::ExitCode;
use std::time::Duration;

use ringmq_client::{Message, Producer, Result, SendResult};

struct Args {
    namesrv: String,
    topic: String,
    group: String,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        namesrv: "127.0.0.1:9876".into(),
        topic: "TopicTest".into(),
        group: "example_producer".into(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let slot = match flag.as_str() {
            "-n" => &mut args.namesrv,
            "-t" => &mut args.topic,
            "-g" => &mut args.group,
            "-h" | "--help" => {
                return Err(
                    "usage: producer -n host:port[;host:port] [-t topic] [-g group]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        };
        *slot = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
    }
    Ok(args)
}

fn show(what: &str, result: &SendResult) {
    println!(
        "{what:<8} {:?} msg_id={} queue={}:{} offset={}",
        result.status,
        result.msg_id,
        result.queue.broker_name,
        result.queue.queue_id,
        result.queue_offset
    );
}

fn run(args: &Args) -> Result<()> {
    let producer = Producer::builder(&args.namesrv)
        .group(args.group.clone())
        .send_timeout(Duration::from_secs(3))
        .retries(2)
        .build()?;
    let topic = args.topic.as_str();

    // Synchronous: block until the broker answers (retrying on another broker group).
    let message = Message::new(topic, "hello, sync")
        .with_tags("TagA")
        .with_keys(["order-1"])
        .with_property("origin", "example");
    show("sync", &producer.send(message).wait()?);

    // Asynchronous: `Pending` is a future; await it on any runtime (here compio's).
    let runtime = compio::runtime::Runtime::new().map_err(|error| {
        ringmq_client::ClientError::InvalidArgument(format!("no runtime: {error}"))
    })?;
    let sends: Vec<_> = (0..3)
        .map(|index| producer.send(Message::new(topic, format!("hello, async {index}"))))
        .collect();
    runtime.block_on(async {
        for pending in sends {
            show("async", &pending.await?);
        }
        Ok::<_, ringmq_client::ClientError>(())
    })?;

    // Oneway: done once queued; the broker does not answer.
    producer
        .send_oneway(Message::new(topic, "hello, oneway"))
        .wait()?;
    println!("oneway   queued");

    // Batch: one request, one queue, every message with its own id.
    let batch = (0..5)
        .map(|index| Message::new(topic, format!("hello, batch {index}")).with_tags("TagB"))
        .collect();
    show("batch", &producer.send_batch(batch).wait()?);

    // Ordered: every step of an order goes to the queue its id selects, so consumers see the
    // steps in order.
    for order_id in 0..2_usize {
        for step in ["created", "paid", "shipped"] {
            let message = Message::new(topic, format!("order {order_id} {step}"))
                .with_keys([format!("order-{order_id}")]);
            let result = producer
                .send_with_selector(message, move |queues, _message| order_id % queues.len())
                .wait()?;
            show("ordered", &result);
        }
    }

    producer.shutdown();
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("producer example failed: {error}");
            ExitCode::FAILURE
        }
    }
}
