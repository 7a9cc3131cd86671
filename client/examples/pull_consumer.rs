//! A pull consumer that reads every queue of a topic from the group's committed offsets (or the
//! first message), prints what it finds, and commits.
//!
//! ```text
//! cargo run -p ringmq-client --example pull_consumer -- -n 127.0.0.1:9876 -t TopicTest -g example-group
//! ```
//!
//! Stops once a poll of 3 s finds nothing new.

use std::time::Duration;

use ringmq_client::{PullConsumer, StartPosition};

fn parse_args() -> Result<(String, String, String), String> {
    let (mut namesrv, mut topic, mut group) = (
        "127.0.0.1:9876".to_owned(),
        String::new(),
        "example-pull-consumer".to_owned(),
    );
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "-n" => namesrv = value,
            "-t" => topic = value,
            "-g" => group = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if topic.is_empty() {
        return Err("usage: pull_consumer -n host:port -t topic [-g group]".into());
    }
    Ok((namesrv, topic, group))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let (namesrv, topic, group) = parse_args()?;
    let consumer = PullConsumer::builder(&namesrv, &group)
        .start_position(StartPosition::First)
        .build()?;
    let queues = consumer.queues(&topic).wait()?;
    consumer.assign(queues.clone()).wait()?;
    for queue in &queues {
        println!("{queue:?} starts at {:?}", consumer.position(queue));
    }
    let mut total = 0_usize;
    // Ends at the first empty poll; each poll is bounded by its timeout.
    loop {
        let messages = consumer.poll(Duration::from_secs(3)).wait()?;
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            println!(
                "queue {} offset {}: {}",
                message.queue_id,
                message.queue_offset,
                String::from_utf8_lossy(&message.body)
            );
        }
        total += messages.len();
        consumer.commit().wait()?;
    }
    println!("{total} messages; committed positions:");
    for queue in &queues {
        println!("  {queue:?} -> {:?}", consumer.committed(queue).wait()?);
    }
    consumer.shutdown();
    Ok(())
}
