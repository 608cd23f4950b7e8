//! Workloads against Tern and other MQTT brokers, and the chaos suite.
//!
//! [`workload`] generates load and checks what arrives (loss, duplicates,
//! order, latency). The `tern-bench` binary runs its scenarios from the
//! command line; `bench/compare.sh` runs them against Tern and Mosquitto
//! side by side.
//!
//! [`chaos`] drives a real multi-node Tern cluster through faults (kills,
//! pauses, partitions, slow links, clock jumps, full disks, lost nodes)
//! while MQTT clients work, and checks the recorded history against the
//! README's guarantees. The `tern-chaos` binary runs it; `run.sh` starts it
//! in a private network namespace.

pub mod chaos;
pub mod workload;
