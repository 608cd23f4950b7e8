//! Workloads against Tern and other MQTT brokers.
//!
//! [`workload`] generates load and checks what arrives (loss, duplicates,
//! order, latency). The `tern-bench` binary runs its scenarios from the
//! command line; `bench/compare.sh` runs them against Tern and Mosquitto
//! side by side. The multi-node fault-injection tests of the design
//! (`shared/DESIGN.md`, "Testing") will drive the same workloads.

pub mod workload;
