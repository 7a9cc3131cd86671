//! A push consumer that prints what it receives.
//!
//! ```text
//! cargo run -p ringmq-client --example push_consumer -- -n 127.0.0.1:9876 -t TopicTest -g example-group \
//!     [-e 'TagA || TagB'] [--broadcast] [--orderly] [-s seconds]
//! ```
//!
//! Runs for `-s` seconds (default 60), then commits its offsets and leaves the group. Set
//! `RUST_LOG=ringmq_client=info` to see the rebalances.

use std::time::{Duration, Instant};

use ringmq_client::{ConsumeMode, ConsumeOutcome, PushConsumer, StartPosition};

struct Args {
    namesrv: String,
    topic: String,
    group: String,
    expression: String,
    broadcast: bool,
    orderly: bool,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        namesrv: "127.0.0.1:9876".into(),
        topic: String::new(),
        group: "example-push-consumer".into(),
        expression: "*".into(),
        broadcast: false,
        orderly: false,
        seconds: 60,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-n" => args.namesrv = value()?,
            "-t" => args.topic = value()?,
            "-g" => args.group = value()?,
            "-e" => args.expression = value()?,
            "-s" => args.seconds = value()?.parse().map_err(|e| format!("-s: {e}"))?,
            "--broadcast" => args.broadcast = true,
            "--orderly" => args.orderly = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.topic.is_empty() {
        return Err("usage: push_consumer -n host:port -t topic [-g group] [-e expr] [--broadcast] [--orderly] [-s seconds]".into());
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = parse_args()?;
    let mode = if args.broadcast {
        ConsumeMode::Broadcasting
    } else {
        ConsumeMode::Clustering
    };
    let consumer = PushConsumer::builder(&args.namesrv, &args.group)
        .subscribe(&args.topic, &args.expression)
        .mode(mode)
        .orderly(args.orderly)
        .start_position(StartPosition::First)
        .batch_size(8)
        .start(|messages, context| {
            for message in messages {
                println!(
                    "{}:{} offset {} reconsumed {} tags {:?}: {}",
                    context.queue.broker_name,
                    context.queue.queue_id,
                    message.queue_offset,
                    message.reconsume_times,
                    message.tags,
                    String::from_utf8_lossy(&message.body)
                );
            }
            ConsumeOutcome::Success
        })?;
    println!("consuming {:?}", consumer.assigned_queues());
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut last = consumer.assigned_queues();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        let now = consumer.assigned_queues();
        if now != last {
            println!("rebalanced: now consuming {now:?}");
            last = now;
        }
    }
    consumer.shutdown()?;
    Ok(())
}
